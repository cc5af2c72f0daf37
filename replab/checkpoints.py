"""What a run keeps of its model on disk, and for how long.

While a run trains, its folder holds

- ``last.pt``: everything ``--resume`` needs (weights, optimizer, scheduler, scaler, RNG states, the epoch and the
  best score so far; one saved inside an epoch also the steps done and the epoch's statistics), written at the end
  of each epoch and about every ``--checkpoint-minutes`` inside one;
- ``previous.pt``: the ``last.pt`` before it, in case the newest is damaged;
- ``best.pt``: the weights of the epoch with the best validation score, with that epoch and score (``epoch``,
  ``model``, ``best``, ``experiment``): what the test scores, ``replab generate`` and the report read. It holds no
  optimizer state, since nothing resumes from it.

When the run completes (its test scores and summary written), ``last.pt`` and ``previous.pt`` are deleted: a
completed run keeps ``best.pt`` alone (one copy of its weights: about 136 MB for a 1-layer LSTM, 145 and 162 MB
with 2 and 4 layers, 4-13 MB for a ViT) beside its logs. An interrupted, diverged or failed run keeps everything
(an interrupted one resumes from it). ``--keep-checkpoints`` keeps the three files of a completed run, each with
the full training state, as this is what training it further (``--resume`` with more ``--epochs``) needs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from replab.console import FILE_ONLY
from replab.runlog import RunDir

log = logging.getLogger("replab.checkpoints")

#: What ``best.pt`` holds without ``--keep-checkpoints``: what evaluation and generation read.
EVALUATION_KEYS = ("epoch", "model", "best", "experiment")


def best_state(state: dict, keep_checkpoints: bool) -> dict:
    """The part of a training state (``Trainer.state``) saved as ``best.pt``: all of it with ``--keep-checkpoints``,
    else the weights with their epoch, best score and experiment."""
    return state if keep_checkpoints else {k: state[k] for k in EVALUATION_KEYS if k in state}


def training_state_files(run: RunDir) -> list[Path]:
    """The checkpoints that only ``--resume`` needs, where they exist."""
    return [p for p in (run.last_checkpoint, run.previous_checkpoint) if p.exists()]


def release_training_state(run: RunDir, keep_checkpoints: bool) -> None:
    """A completed run's clean-up: delete ``last.pt`` and ``previous.pt`` (unless ``keep_checkpoints``), logged to
    ``train.log`` with the space they took."""
    files = training_state_files(run)
    if keep_checkpoints or not files:
        return
    size = sum(p.stat().st_size for p in files)
    for path in files:
        path.unlink(missing_ok=True)
    log.info("completed: deleted %s (%s of training state, only --resume needs it; --keep-checkpoints keeps it); "
             "best.pt is kept", " and ".join(p.name for p in files), megabytes(size), extra=FILE_ONLY)


def cannot_train_further(run: RunDir) -> str:
    """Why a completed run without its training state cannot be resumed for more epochs, and what to do."""
    return (f"{run.path} is a completed run that kept only best.pt (weights, no optimizer state), so it cannot be "
            "trained for more epochs: pass --overwrite to train it again from the start (with --keep-checkpoints "
            "to keep what a later --resume needs)")


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"
