"""The study as the report sees it: every run folder found under the runs folders (``load_study``), grouped by
grid, with the grids' members that no folder holds (``Study.missing``). Where several folders hold one experiment
id, the folder named after the id is the grid's member and the others are side runs (``results/runs/lstm-1-fp32``:
``lstm-1`` kept in float32 beside the grid's bf16 ``lstm-1``), shown in the runs table and the comparisons made for
them, never in the grid's tables, overlays and findings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from replab.experiments import GRIDS
from replab.report.runs import RunView
from replab.runlog import RunRecord, find_runs


@dataclass
class Study:
    """Every run found, grouped by grid (``lstm``, ``vit``, ``cnn``), with the grids' missing members."""

    roots: list[Path]
    runs: list[RunView] = field(default_factory=list)

    def grid(self, name: str) -> list[RunView]:
        """The runs of one grid in table order (architecture, layers, optimizer), without side runs."""
        return sorted((r for r in self.runs if r.task == name and not r.side), key=RunView.sort_key)

    def side_runs(self, name: str) -> list[RunView]:
        """The side runs of one grid (a second folder of an id the grid holds), in table order."""
        return sorted((r for r in self.runs if r.task == name and r.side), key=RunView.sort_key)

    def grid_with_missing(self, name: str) -> list[RunView]:
        """The runs of one grid and placeholders for its missing members, in table order."""
        runs = self.grid(name) + [RunView.placeholder(i) for i in self.missing(name)]
        return sorted(runs, key=RunView.sort_key)

    def missing(self, name: str) -> list[str]:
        """Registry ids of the grid that no run folder holds (the optional CNN grid: only once one CNN ran)."""
        if name == "cnn" and not self.grid("cnn"):
            return []
        found = {r.id for r in self.runs}
        return [i for i in GRIDS[name] if i not in found]

    def get(self, run_id: str) -> RunView | None:
        """The grid's run of an experiment id (not a side run)."""
        return next((r for r in self.runs if r.id == run_id and not r.side), None)


def load_study(roots: Iterable[str | Path]) -> Study:
    """Every run folder under ``roots``. Of the folders holding one experiment id, the first named after the id
    (else the first found) is the grid's run; the others are side runs, named by their folder (or the id with a
    number, where that name is taken)."""
    roots = [Path(r) for r in roots]
    records = find_runs(roots)
    by_id: dict[str, list[RunRecord]] = {}
    for record in records:
        by_id.setdefault(record.id, []).append(record)
    members = {run_id: next((r for r in group if r.path.name == run_id), group[0]) for run_id, group in by_id.items()}
    runs, keys = [], set(by_id)
    for record in records:
        side = record is not members[record.id]
        key = record.id
        if side:
            key, number = record.path.name, 1
            while key in keys:
                number += 1
                key = f"{record.id}-{number}"
        keys.add(key)
        runs.append(RunView(record, key, side=side))
    return Study(roots, runs)


def completed(runs: Iterable[RunView]) -> list[RunView]:
    return [r for r in runs if r.completed and r.best_val is not None]
