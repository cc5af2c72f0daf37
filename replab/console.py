"""What the ``replab`` commands write to the terminal, and where.

Standard output carries each command's results (a run's closing line, tables, the report's path); standard error
carries the log (epoch lines, warnings) and the errors, each error one line ``replab: error: <problem>: <fix>``.
Scores are written as the report writes them: accuracy in % with two decimals, perplexity with two decimals.

Under DDP (``torchrun``) the console is rank 0's: a process of rank N > 0 writes nothing to standard output and
only its warnings and errors to standard error, each prefixed ``rank N:``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

#: ``extra=FILE_ONLY`` on a log call: the record goes to the run's ``train.log``, not to the console.
FILE_ONLY = {"console": False}


def process_rank() -> int:
    """This process's rank under ``torchrun`` (its ``RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK") or 0)
    except ValueError:
        return 0


def _prefix(rank: int) -> str:
    return f"rank {rank}: " if rank else ""


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def configure_logging(verbose: bool = False, rank: int | None = None) -> None:
    """The console's log handler (standard error): INFO and above (DEBUG with ``verbose``) on rank 0, warnings and
    errors prefixed ``rank N:`` on the other ranks; records logged with ``extra=FILE_ONLY`` are left out. Like
    ``logging.basicConfig``, it does nothing where the root logger has handlers already."""
    rank = process_rank() if rank is None else rank
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NotFileOnly())
    handler.setFormatter(logging.Formatter(f"{_prefix(rank)}%(levelname)s: %(message)s" if rank else "%(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


@contextlib.contextmanager
def main_process_output(rank: int | None = None):
    """Standard output as is on rank 0; discarded on the other ranks of a distributed run (one console)."""
    rank = process_rank() if rank is None else rank
    if rank == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@contextlib.contextmanager
def log_file(path: Path):
    """The ``replab`` log also written to ``path`` (a run's ``train.log``) while inside: timestamped lines, INFO and
    above whatever the console shows, the ``FILE_ONLY`` records included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("replab")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the epoch lines
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def tagged(line: str, rank: int | None = None) -> str:
    """A line for standard error, prefixed ``rank N:`` on rank N > 0 of a distributed run."""
    return _prefix(process_rank() if rank is None else rank) + line


def error_line(message: str, rank: int | None = None) -> str:
    """The one line of a usage error: ``replab: error: <message>`` (prefixed ``rank N:`` on rank N > 0)."""
    return tagged(f"replab: error: {message}", rank)


def format_score(metric: str, value: float | None) -> str:
    """A score as the report writes it: ``45.22 %`` for accuracy, ``225.61`` for perplexity, ``—`` for none."""
    if value is None:
        return "—"
    if metric == "accuracy":
        return f"{100 * value:.2f} %"
    return f"{value:.2f}"


def epoch_line(record: dict, metric: str) -> str:
    """The log line of an epoch's record (``metrics.jsonl``): losses, scores as the report writes them, seconds."""
    return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} {metric} "
            f"{format_score(metric, record[f'train_{metric}'])} | valid loss {record['val_loss']:.4f} {metric} "
            f"{format_score(metric, record[f'val_{metric}'])} | {record['train_seconds']:.1f}s")


def closing_line(experiment_id: str, summary: dict) -> str:
    """The one line a run ends with: ``vit-2: completed; best validation accuracy 45.22 % (epoch 2)``, with the
    reason of a run that did not complete."""
    reason = f": {summary['reason']}" if summary.get("reason") else ""
    best = summary.get("best_val")
    detail = ""
    if best is not None:
        detail = (f"; best validation {summary['metric']} {format_score(summary['metric'], best)} "
                  f"(epoch {summary['best_epoch']})")
    return f"{experiment_id}: {summary.get('status')}{reason}{detail}"
