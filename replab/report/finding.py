"""A finding: one statement computed from the runs, with the question of the specification it answers; and the
phrases the findings modules (``findings``, ``memory_overfitting``) write alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Finding:
    topic: str
    text: str
    question: tuple[int, int] | None = None  # (problem, question) it answers; None: about the runs themselves


def counted_runs(count: int) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} run{'s' if count != 1 else ''}"
