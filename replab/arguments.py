"""What the ``replab`` commands' options share: the types that check numbers (a one-line error naming the value and
the rule) and the help texts of the options several commands take. At the bottom of the import graph, beside
``replab.exits``: every module that adds a command's arguments (``replab.cli``, ``replab.reproduce``,
``replab.report.commands``, ``replab.data.commands``) and the benchmarks use it.
"""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps (default: auto)"
DATA_DIR_HELP = "data folder holding wikitext2/ and cifar10/ (default: $REPLAB_DATA, else ./data)"
PROGRESS_HELP = "tqdm progress bars (default: on when standard error is a terminal)"
KEEP_CHECKPOINTS_HELP = (
    "keep every checkpoint of a completed run with its full training state: best.pt, last.pt and previous.pt "
    "(0.4-0.5 GB each for an LSTM), needed only to train it further with --resume and more --epochs. Default: a "
    "completed run keeps best.pt alone, its weights only (about 136 MB for a 1-layer LSTM, 4-13 MB for a ViT), "
    "which is what test scores, replab generate and the report use; a run still training or interrupted always "
    "keeps what --resume needs")


def _number(text: str, kind: type, rule: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def number(text: str) -> float:
    return _number(text, float, "a number")


def integer(text: str) -> int:
    return _number(text, int, "an integer")
