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

What a checkpoint holds is ``TrainingState.state``; ``restore`` loads the newest readable one for ``--resume``, and
a checkpoint saved inside an epoch (``partial_epoch_state``) is continued by ``continue_epoch``. Checkpoints are
read with ``load_checkpoint`` (``weights_only=True``: tensors and plain containers, never code); the run folder
writes them (``RunDir.save_checkpoints``, atomically).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from replab.console import FILE_ONLY
from replab.runlog import RunDir

log = logging.getLogger("replab.checkpoints")

#: What ``best.pt`` holds without ``--keep-checkpoints``: what evaluation and generation read.
EVALUATION_KEYS = ("epoch", "model", "best", "experiment")


def best_state(state: dict, keep_checkpoints: bool) -> dict:
    """The part of a training state (``TrainingState.state``) saved as ``best.pt``: all of it with
    ``--keep-checkpoints``, else the weights with their epoch, best score and experiment."""
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


# ------------------------------------------------------------------------------------------------ reading
class CheckpointError(Exception):
    """A checkpoint that cannot be used: ``unsafe`` when it holds objects a weights-only load refuses."""

    def __init__(self, path: Path, reason: str, unsafe: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.unsafe = Path(path), reason, unsafe


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A checkpoint read with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers.

    Raises ``CheckpointError``: damaged (truncated, not a checkpoint) or unsafe (a pickle that would build other
    objects, e.g. run code through ``__reduce__``: refused before anything is built).
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _weights_unpickler_error(str(error))
        if "global" in detail.lower() or "reduce" in detail.lower():  # an object it would have had to build
            raise CheckpointError(
                path, f"refused: it holds Python objects that a weights-only load does not allow ({detail}), so it "
                "was not written by replab or was altered (only load checkpoints you trust)", unsafe=True) from None
        raise CheckpointError(path, f"damaged ({detail})") from None
    except FileNotFoundError:
        raise CheckpointError(path, "missing") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(path, f"damaged ({first_line})") from None
    if not isinstance(checkpoint, dict) or not {"epoch", "model"} <= set(checkpoint):
        raise CheckpointError(path, "not a replab checkpoint (no epoch and model state)")
    return checkpoint


def _weights_unpickler_error(message: str) -> str:
    """The useful part of torch's weights-only error (``Unsupported global: GLOBAL io.open was not ...``)."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n|$)", message)
    text = match.group(1) if match else (message.strip().splitlines() or ["unreadable"])[0]
    return text.strip().rstrip(".")


# ------------------------------------------------------------------------------------------------ the state
class ResumeError(Exception):
    """The run cannot be resumed from its checkpoints: one line for the user (the trainer's ``RunError``)."""


@dataclass
class TrainingState:
    """What a checkpoint saves of a run in training and restores: the model (not its DDP or compiled wrapper), the
    optimizer, the learning-rate scheduler, the gradient scaler and the global RNG states, with the epoch, the best
    score so far and the experiment's record (``Experiment.to_dict``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    experiment: dict

    def state(self, epoch: int, best: dict) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": best,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "experiment": self.experiment,
        }

    def load(self, checkpoint: dict, path: Path) -> tuple[int, dict]:
        """Model, optimizer, scheduler, scaler and RNG from a checkpoint; returns (its epoch, best so far)."""
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            set_rng_state(checkpoint["rng"])
            return int(checkpoint["epoch"]), dict(checkpoint["best"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(path, f"does not fit this run ({first_line})") from None


def set_rng_state(rng: dict) -> None:
    """The global RNG states a checkpoint recorded (``TrainingState.state``): the CPU's, and CUDA's where both
    exist."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])


@dataclass
class Resume:
    """Where a resumed run starts: the epochs done, the best score so far, their epoch lines, and the epoch in
    progress when the checkpoint was saved inside one (``partial_epoch_state``'s ``partial`` with the RNG states
    as ``rng``), else None. A fresh run: ``Resume()``."""

    epoch: int = 0
    best: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    partial: dict | None = None


def restore(run: RunDir, training: TrainingState, device: torch.device, is_main: bool) -> Resume:
    """Load the newest readable checkpoint (``last.pt``, else ``previous.pt``) into ``training``; drop the metrics
    written after it (``is_main``: the process that writes the run folder).

    A damaged ``last.pt`` falls back to ``previous.pt`` with a warning; no checkpoint file at all (killed before
    the first one was complete) starts from epoch 0; checkpoint files none of which can be read, or one a
    weights-only load refuses, raise ``ResumeError``, as does a completed run that kept only ``best.pt``.
    """
    candidates = training_state_files(run)
    if not candidates and (run.read_summary() or {}).get("status") == "completed":  # more epochs asked for
        raise ResumeError(cannot_train_further(run))
    if not candidates:
        if is_main and run.metrics.exists():
            run.keep_metrics_through(0)
        return Resume()
    problems = []
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path, map_location=device)
            epoch, best = training.load(checkpoint, path)
        except CheckpointError as error:
            if error.unsafe:
                raise ResumeError(f"{error}; nothing was loaded") from None
            problems.append(f"{path.name} {error.reason}")
            log.warning("cannot resume from %s: %s", path, error.reason)
            continue
        if problems:
            log.warning("%s: resuming from %s, epoch %d; the metrics of later epochs are dropped",
                        "; ".join(problems), path, epoch)
        records = run.keep_metrics_through(epoch) if is_main else []
        partial = checkpoint.get("partial")
        if partial is not None:
            partial = {**partial, "rng": checkpoint["rng"]}
            log.info("resuming inside epoch %d, after step %d", partial["epoch"], partial["steps"])
        return Resume(epoch, best, records, partial)
    raise ResumeError(f"no readable checkpoint in {run.path} ({'; '.join(problems)}): start the run again with "
                      "--overwrite")


# ------------------------------------------------------------------------------------------------ inside an epoch
def partial_epoch_state(state: dict, epoch: int, steps: int, totals: dict[str, torch.Tensor], summed: dict,
                        train_seconds: float, wall_seconds: float) -> dict:
    """A checkpoint inside ``epoch``: ``state`` (the last completed epoch's, ``TrainingState.state``) with the steps
    done since, the epoch's statistics so far (``summed`` over ranks; ``totals``, this process's, give their dtypes)
    and its seconds, which ``continue_epoch`` resumes from."""
    return {**state, "partial": {
        "epoch": epoch, "steps": steps, "totals": summed,
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in totals.items()},
        "train_seconds": train_seconds, "wall_seconds": wall_seconds}}


def continue_epoch(partial: dict, batches: Iterator, device: torch.device,
                   is_main: bool) -> tuple[int, dict[str, torch.Tensor], float]:
    """Continue the epoch a checkpoint was saved in (``Resume.partial``): draw the batches its steps trained on
    (not training on them), restore the global RNG, and return (steps done, the statistics so far, the training
    seconds so far). The statistics were summed over ranks: rank 0 (``is_main``) carries them, the others start
    from zero."""
    collections.deque(itertools.islice(batches, partial["steps"]), maxlen=0)  # the generator where the epoch stopped
    set_rng_state(partial["rng"])
    totals = {}
    if is_main:  # the other ranks' statistics are in these sums already
        totals = {k: torch.tensor(v, dtype=getattr(torch, partial["dtypes"][k]), device=device)
                  for k, v in partial["totals"].items()}
    return partial["steps"], totals, partial["train_seconds"]
