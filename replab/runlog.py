"""The files a run leaves in its folder, written and read in one place, and the records they hold.

``config.json`` (resolved configuration, environment and the attempts that trained the run: ``config_record``),
``metrics.jsonl`` (one JSON object per epoch, appended as each epoch ends), ``summary.json`` (status and scores:
``run_summary``), ``train.log`` (human-readable), an LSTM's ``sample.json`` (``replab.run_sample``), the
checkpoints ``last.pt``/``previous.pt``/``best.pt`` (what they hold, and which a completed run keeps:
``replab.checkpoints``), and ``.lock`` (held by the one process writing the folder). Every file that is rewritten
is written atomically (temporary file in the same folder, fsync, then ``os.replace``), so a kill never leaves a
half-written file behind; ``last.pt`` keeps its predecessor as ``previous.pt``, so one damaged checkpoint never
loses the run. The report reads run folders back through ``find_runs``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch


def _json_default(value):
    if isinstance(value, Path | torch.dtype | torch.device):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value):
    """NaN/inf are not JSON: store them as null (a diverged run's last loss) ."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(value), default=_json_default, indent=indent, allow_nan=False)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], keep_previous: Path | None = None) -> None:
    """The one atomic writer: ``write(file)`` into a temporary file beside ``path``, fsync, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched.

    ``keep_previous``: move the current ``path`` there first, so the file before survives a damaged new one. A
    kill between the two renames leaves ``keep_previous`` and no ``path``: readers try both.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (to_json(value, indent=2) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any, keep_previous: Path | None = None) -> None:
    """``torch.save`` through ``atomic_write`` (``keep_previous``: the checkpoint before is kept there)."""
    atomic_write(path, lambda f: torch.save(obj, f), keep_previous)


def better(value: float, than: float, higher_is_better: bool) -> bool:
    """Whether the score ``value`` is strictly better than ``than`` (higher accuracy, lower perplexity)."""
    return value > than if higher_is_better else value < than


def memory_summary(records: list[dict]) -> dict:
    """A run's memory over its epoch records: ``source``, mean of the epochs' steady means, overall peak (and on
    CUDA the largest ``max_allocated_mb`` / ``reserved_mb``)."""
    memory = [r["memory"] for r in records if r.get("memory")]
    means = [m["steady_mean_mb"] for m in memory if m.get("steady_mean_mb") is not None]
    peaks = [m["peak_mb"] for m in memory if m.get("peak_mb") is not None]
    summary = {
        "source": memory[-1]["source"] if memory else None,
        "steady_mean_mb": round(sum(means) / len(means), 1) if means else None,
        "peak_mb": max(peaks) if peaks else None,
    }
    for key in ("max_allocated_mb", "reserved_mb"):
        values = [m[key] for m in memory if m.get(key) is not None]
        if values:
            summary[key] = max(values)
    return summary


# ------------------------------------------------------------------------------------------------ records
ATTEMPT_ENVIRONMENT = ("git_commit", "torch", "device", "device_name", "hostname")  # recorded per attempt


def attempt_record(env: dict, started: str | None, from_epoch: int | None, from_step: int | None) -> dict:
    """One entry of config.json's ``attempts``: when a process started, where in the run (epoch, step inside it),
    and the ``ATTEMPT_ENVIRONMENT`` part of its ``environment()``."""
    return {"started": started, "from_epoch": from_epoch, "from_step": from_step,
            **{k: env.get(k) for k in ATTEMPT_ENVIRONMENT}}


def attempt_history(earlier: dict | None, attempt: dict) -> dict:
    """``{"started", "attempts"}`` of config.json: when the run first started, and every process that trained it.

    ``attempt``: this process's ``attempt_record``. ``earlier``: the
    config.json written by the attempt before (None for a fresh start). A config.json from before attempts were
    recorded stands for one attempt, rebuilt from its ``started`` and ``environment`` (where it began: unknown).
    A run resumed from another commit or machine thus says which epochs came from which.
    """
    if not earlier:
        return {"started": attempt["started"], "attempts": [attempt]}
    before = earlier.get("attempts") or [attempt_record(earlier.get("environment") or {}, earlier.get("started"),
                                                        None, None)]
    return {"started": earlier.get("started") or attempt["started"], "attempts": [*before, attempt]}


def config_record(run: dict, environment: dict, started: str, first_epoch: int, first_step: int,
                  earlier: dict | None) -> dict:
    """What ``config.json`` holds: ``run`` (the run's ``experiment``, ``settings``, ``task``, ``parameters`` and
    ``world_size``, in that order), this process's ``environment`` and the history of the attempts
    (``attempt_history``): this one ``started`` at ``first_epoch``/``first_step`` (epoch 1, step 0 unless resumed),
    ``earlier`` the config.json of the attempts before it (None for a fresh start)."""
    attempt = attempt_record(environment, started, first_epoch, first_step)
    return {**run, "environment": environment, **attempt_history(earlier, attempt)}


def run_summary(run_id: str, status: str, reason: str | None, metric: str, higher_is_better: bool,
                epochs_planned: int, records: list[dict], best: dict, tests: dict | None = None) -> dict:
    """What ``summary.json`` holds: the status (and why a run stopped), the metric and its direction, the best
    validation score (``best``: ``{"value", "epoch"}``) and the last epoch's of ``records`` (the epoch lines), time,
    memory, and the test scores ``tests``."""
    summary = {
        "id": run_id,
        "status": status,
        "reason": reason,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "epochs_completed": len(records),
        "epochs_planned": epochs_planned,
        "best_val": best.get("value"),
        "best_epoch": best.get("epoch"),
    }
    if records:
        last = records[-1]
        summary.update({
            "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
            f"final_train_{metric}": last[f"train_{metric}"], f"final_val_{metric}": last[f"val_{metric}"],
            "total_seconds": last["wall_seconds"],
            "mean_epoch_seconds": sum(r["train_seconds"] for r in records) / len(records),
            "memory": memory_summary(records),
        })
    summary.update(tests or {})
    return summary


# ------------------------------------------------------------------------------------------------ files
class RunLocked(Exception):
    """Another live process holds the run folder's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` for the life of a run: one writer per run folder.

    The kernel drops the lock when its process ends, however it ends, so a lock file left by a dead process never
    blocks. The holder writes its pid into the file, for the message another process gets.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(f"{self.path.parent} is being written by another process (pid {holder}); "
                                "wait for it to end or stop it, then --resume") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunDir:
    """The folder of one run (``<out>/<experiment id>``) and the files in it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    log = property(lambda self: self.path / "train.log")
    last_checkpoint = property(lambda self: self.path / "last.pt")
    previous_checkpoint = property(lambda self: self.path / "previous.pt")
    best_checkpoint = property(lambda self: self.path / "best.pt")

    def exists(self) -> bool:
        return self.config.exists() or self.summary.exists() or self.metrics.exists()

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config, config)

    def append_metrics(self, record: dict) -> None:
        """One line, fsynced; a failed write (full disk) is cut off again, leaving the earlier lines intact."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "ab") as f:
            size = f.tell()
            try:
                f.write((to_json(record) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise

    def save_checkpoints(self, state: dict, best: dict | None = None) -> None:
        """``best`` as ``best.pt`` where given (this epoch is the best so far; what it holds: ``replab.checkpoints``),
        then ``state`` as ``last.pt`` (its predecessor kept as ``previous.pt``)."""
        if best is not None:
            atomic_torch_save(self.best_checkpoint, best)
        atomic_torch_save(self.last_checkpoint, state, keep_previous=self.previous_checkpoint)

    def remove_temporary_files(self) -> None:
        """The ``.<name>.*.tmp`` files of atomic writes that a kill interrupted (only the lock holder calls this)."""
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def remove_contents(self, keep: tuple[str, ...] = (".lock",)) -> None:
        """Empty the folder for a new run (``--overwrite``), keeping the lock this process holds."""
        for child in self.path.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)

    def discard_summary(self) -> None:
        """Remove the summary of an earlier attempt: a run being resumed is neither interrupted nor completed."""
        self.summary.unlink(missing_ok=True)

    def read_config(self) -> dict | None:
        return _read_json(self.config)

    def read_summary(self) -> dict | None:
        return _read_json(self.summary)

    def read_metrics(self) -> list[dict]:
        """The complete epoch records, in order (a torn last line from a kill, and anything after it, is ignored)."""
        return self.read_metrics_checked()[0]

    def read_metrics_checked(self) -> tuple[list[dict], str | None]:
        """The epoch records before the first unreadable line, and what was wrong (``None``: every line read)."""
        try:
            text = self.metrics.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return [], None
        except OSError as error:
            return [], f"metrics.jsonl unreadable ({error.strerror})"
        records: list[dict] = []
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                torn_end = number == len(lines) and not text.endswith("\n")
                return records, None if torn_end else f"metrics.jsonl damaged at line {number}"
            records.append(record)
        return records, None

    def keep_metrics_through(self, epoch: int) -> list[dict]:
        """Drop epoch records after ``epoch`` (written after the checkpoint a resume starts from)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        atomic_write_bytes(self.metrics, "".join(to_json(r) + "\n" for r in records).encode())
        return records


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; ``None`` when it is missing or damaged (see ``_json_problem``)."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _json_problem(path: Path) -> str | None:
    """Why ``path`` exists but holds no JSON object (``None``: missing or fine)."""
    if not path.exists():
        return None
    return f"{path.name} damaged" if _read_json(path) is None else None


@dataclass
class RunRecord:
    """Everything a finished or unfinished run left, as read back for the report."""

    path: Path
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # damaged files: what the report marks

    @property
    def id(self) -> str:
        return self.config.get("experiment", {}).get("id", self.path.name)

    @property
    def status(self) -> str:
        """The summary's status; ``running`` for a started run (config or epochs) that has none yet;
        ``damaged`` when one of its files cannot be read (its numbers may be incomplete)."""
        if self.problems:
            return "damaged"
        return self.summary.get("status", "running" if self.metrics or self.config else "missing")


def load_run(path: str | os.PathLike) -> RunRecord:
    """What a run folder holds; damaged files are read as far as they go and listed in ``problems``."""
    run = RunDir(path)
    metrics, metrics_problem = run.read_metrics_checked()
    problems = [p for p in (_json_problem(run.config), metrics_problem, _json_problem(run.summary)) if p]
    return RunRecord(Path(path), run.read_config() or {}, metrics, run.read_summary() or {}, problems)


def find_runs(roots: Iterable[str | os.PathLike]) -> list[RunRecord]:
    """Every run folder (one holding a ``config.json``) under the given folders, sorted by path."""
    found = []
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / "config.json").exists() else sorted(p.parent for p in root.rglob("config.json"))
        found.extend(load_run(p) for p in candidates)
    return found
