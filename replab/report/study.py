"""The study as the report sees it: every run folder found under the runs folders (``load_study``), grouped by
grid, with the grids' members that no folder holds (``Study.missing``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from replab.experiments import GRIDS
from replab.report.runs import RunView
from replab.runlog import find_runs


@dataclass
class Study:
    """Every run found, grouped by grid (``lstm``, ``vit``, ``cnn``), with the grids' missing members."""

    roots: list[Path]
    runs: list[RunView] = field(default_factory=list)

    def grid(self, name: str) -> list[RunView]:
        """The runs of one grid in table order (architecture, layers, optimizer)."""
        return sorted((r for r in self.runs if r.task == name), key=RunView.sort_key)

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
        return next((r for r in self.runs if r.id == run_id), None)


def load_study(roots: Iterable[str | Path]) -> Study:
    roots = [Path(r) for r in roots]
    runs, seen = [], {}
    for record in find_runs(roots):
        seen[record.id] = seen.get(record.id, 0) + 1
        runs.append(RunView(record, record.id if seen[record.id] == 1 else f"{record.id}-{seen[record.id]}"))
    return Study(roots, runs)


def completed(runs: Iterable[RunView]) -> list[RunView]:
    return [r for r in runs if r.completed and r.best_val is not None]
