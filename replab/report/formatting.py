"""How the report writes numbers: scores in the metric's unit (accuracy in percent, perplexity as it is),
differences, durations, counts and MiB; a value that is missing or not finite is written ``—``."""

from __future__ import annotations

import math


def is_number(value) -> bool:
    return value is not None and math.isfinite(value)


def scale(value: float | None, metric: str) -> float | None:
    """Accuracy is stored as a fraction and shown in percent; perplexity as it is."""
    if not is_number(value):
        return None
    return value * 100 if metric == "accuracy" else value


def fmt_metric(value: float | None, metric: str) -> str:
    shown = scale(value, metric)
    return "—" if shown is None else f"{shown:.2f}" + ("%" if metric == "accuracy" else "")


def fmt_diff(difference: float, metric: str) -> str:
    """A difference of two scores: percentage points for accuracy, perplexity points otherwise."""
    return f"{scale(difference, metric):+.2f} " + ("pp" if metric == "accuracy" else "perplexity")


def metric_title(metric: str) -> str:
    return "accuracy (%)" if metric == "accuracy" else metric


def fmt_seconds(seconds: float | None) -> str:
    if not is_number(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_count(count: int | None) -> str:
    return "—" if count is None else f"{count:,}"


def fmt_mib(value: float | None) -> str:
    return f"{value:,.0f}" if is_number(value) else "—"
