"""The text sample an LSTM run keeps in its folder, ``sample.json``, so that a reader sees what its perplexity means.

The run draws it from its ``best.pt`` each time it saves a new one, and once more when it completes if an earlier
attempt left it out (``keep_sample``): the continuation of the fixed prompt ``SAMPLE_PROMPT`` (the opening words
of the first article of the validation split) with the fixed ``SAMPLE_SETTINGS`` (seed included), on the CPU, as
``replab generate RUN --prompt PROMPT --tokens 40 --temperature 0.8 --top-k 40 --seed 0`` would: the same
checkpoint gives the same text. The report reads it from the run folder (``replab.report.samples``), so runs
published without checkpoints still show it; ``scripts/publish`` copies it with the run's logs.

``sample.json``::

    {"format": 1, "checkpoint": "best.pt", "epoch": 3, "prompt": "...", "settings": {"tokens": 40, ...},
     "continuation": "...", "text": "<prompt> <continuation>", "provenance": "how it was made"}

A sample made otherwise than by the run (one recovered from an earlier record) says so in ``provenance`` and
names its source in ``recovered_from``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from replab.console import FILE_ONLY
from replab.generate import SampleSettings, load_lstm, sample
from replab.runlog import atomic_write_json
from replab.system import git_commit, release_free_memory
from replab.text import GPT1Tokenizer

log = logging.getLogger("replab.run_sample")

SAMPLE_FILE = "sample.json"
SAMPLE_FORMAT = 1
SAMPLE_SETTINGS = SampleSettings(tokens=40, temperature=0.8, top_k=40, seed=0)
SAMPLE_PROMPT = "homarus gammarus, known as the european lobster or common lobster, is a"
_told: set[tuple[Path, str]] = set()  # the reasons for no sample already logged


def read_sample(run_dir: str | Path) -> dict | None:
    """The run's ``sample.json``; None where it has none, or one that cannot be read."""
    try:
        value = json.loads((Path(run_dir) / SAMPLE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("continuation"), str) else None


def is_standard(record: dict) -> bool:
    """Whether a sample was drawn with this version's prompt and settings (the report's introduction names them)."""
    return record.get("prompt") == SAMPLE_PROMPT and record.get("settings") == dataclasses.asdict(SAMPLE_SETTINGS)


def keep_sample(run_dir: str | Path, data_dir: str | Path, epoch: int) -> dict | None:
    """Draw the sample of ``run_dir/best.pt`` (of ``epoch``) into ``sample.json``, unless it holds that epoch's
    already; returns what it holds. Never fails the run: without GPT-1's vocabulary in ``data_dir``, or with a
    ``best.pt`` that cannot be loaded, it logs why and writes nothing. The global RNG is left as it was (training
    continues with the same numbers) and the memory the draw took is given back."""
    run_dir = Path(run_dir)
    existing = read_sample(run_dir)
    if existing and existing.get("epoch") == epoch and is_standard(existing):
        return existing
    try:
        tokenizer = GPT1Tokenizer.from_data_dir(data_dir)
        with torch.random.fork_rng(devices=[]):
            model, record = load_lstm(run_dir, "best")
            drawn = sample(model, SAMPLE_PROMPT, SAMPLE_SETTINGS, tokenizer)
        del model
    except (FileNotFoundError, ValueError) as error:
        if (run_dir, str(error)) not in _told:  # once per run and reason, not after every epoch
            _told.add((run_dir, str(error)))
            log.warning("%s: no text sample (%s)", run_dir.name, error)
        return None
    finally:
        release_free_memory(torch.device("cpu"))
    commit = git_commit()
    value = {
        "format": SAMPLE_FORMAT, "checkpoint": "best.pt", "epoch": record.get("epoch"), "prompt": SAMPLE_PROMPT,
        "settings": dataclasses.asdict(SAMPLE_SETTINGS), "continuation": drawn.continuation, "text": drawn.text,
        "provenance": f"drawn by the run from its best.pt of epoch {record.get('epoch')} on the CPU, as it saved it"
                      f"{f' (replab commit {commit})' if commit else ''}",
    }
    try:
        atomic_write_json(run_dir / SAMPLE_FILE, value)
    except OSError as error:
        log.warning("%s: could not write %s: %s", run_dir.name, SAMPLE_FILE, error.strerror or error)
        return None
    log.info("sample of best.pt (epoch %s): \u201c\u2026 %s\u201d", value["epoch"], drawn.continuation,
             extra=FILE_ONLY)
    return value
