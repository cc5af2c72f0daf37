"""The files a run leaves in its folder, written and read in one place.

``config.json`` (resolved configuration and environment), ``metrics.jsonl`` (one JSON object per epoch,
appended as each epoch ends), ``summary.json`` (status and scores), ``train.log`` (human-readable), and the
checkpoints ``last.pt``/``best.pt``. Every file that is rewritten is written atomically (temporary file in the
same folder, then ``os.replace``), so a kill never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (to_json(value, indent=2) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """The folder of one run (``<out>/<experiment id>``) and the files in it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    log = property(lambda self: self.path / "train.log")
    last_checkpoint = property(lambda self: self.path / "last.pt")
    best_checkpoint = property(lambda self: self.path / "best.pt")

    def exists(self) -> bool:
        return self.config.exists() or self.summary.exists() or self.metrics.exists()

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config, config)

    def append_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a") as f:
            f.write(to_json(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

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
        """The complete epoch records, in order (a torn last line from a kill is ignored)."""
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def keep_metrics_through(self, epoch: int) -> list[dict]:
        """Drop epoch records after ``epoch`` (written after the checkpoint a resume starts from)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        atomic_write_bytes(self.metrics, "".join(to_json(r) + "\n" for r in records).encode())
        return records


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class RunRecord:
    """Everything a finished or unfinished run left, as read back for the report."""

    path: Path
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config.get("experiment", {}).get("id", self.path.name)

    @property
    def status(self) -> str:
        """The summary's status; ``running`` for a started run (config or epochs) that has none yet."""
        return self.summary.get("status", "running" if self.metrics or self.config else "missing")


def load_run(path: str | os.PathLike) -> RunRecord:
    run = RunDir(path)
    return RunRecord(Path(path), run.read_config() or {}, run.read_metrics(), run.read_summary() or {})


def find_runs(roots: Iterable[str | os.PathLike]) -> list[RunRecord]:
    """Every run folder (one holding a ``config.json``) under the given folders, sorted by path."""
    found = []
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / "config.json").exists() else sorted(p.parent for p in root.rglob("config.json"))
        found.extend(load_run(p) for p in candidates)
    return found
