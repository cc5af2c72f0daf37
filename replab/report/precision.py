"""One configuration trained in two precisions: a grid run and a side run of the same experiment whose autocast
precision (``settings.amp`` of ``config.json``) differs, e.g. the LSTM grid's bf16 ``lstm-1`` and the float32
``lstm-1`` kept beside it as ``lstm-1-fp32``.

``precision_pairs`` finds them; ``comparison_text`` compares their validation scores epoch by epoch (relative
difference, and whether every epoch they share is within ``PRECISION_TOLERANCE``); the figure is
``replab.report.figures.precision_figure``.
"""

from __future__ import annotations

from replab.report.finding import Finding
from replab.report.formatting import fmt_metric, is_number
from replab.report.reference import GRID_TITLES
from replab.report.runs import RunView
from replab.report.study import Study

PRECISION_TOLERANCE = 0.03  # bf16 "trains like fp32" when every shared epoch's validation score is this close
PRECISION_NAMES = {"none": "float32", "bf16": "bf16", "fp16": "fp16"}
CURVES_QUESTION = {"lstm": (1, 3), "vit": (3, 1), "cnn": (3, 6)}  # where a grid's curves (and this comparison) are


def precision(run: RunView) -> str:
    """``float32``, ``bf16`` or ``fp16``: the run's autocast precision."""
    amp = run.settings.get("amp") or "none"
    return PRECISION_NAMES.get(amp, amp)


def precision_pairs(study: Study, grid: str) -> list[tuple[RunView, RunView]]:
    """(grid run, side run) of each side run of the grid whose grid run has another precision, both with an
    epoch."""
    pairs = []
    for side in study.side_runs(grid):
        member = study.get(side.id)
        if member is not None and precision(member) != precision(side) and member.epochs and side.epochs:
            pairs.append((member, side))
    return pairs


def shared_epochs(a: RunView, b: RunView) -> list[tuple[int, float, float]]:
    """(epoch, a's validation score, b's) of every epoch both have a finite validation score for."""
    key = f"val_{a.metric}"
    theirs = dict(zip(b.epochs, b.series(key), strict=True))
    return [(epoch, mine, theirs[epoch]) for epoch, mine in zip(a.epochs, a.series(key), strict=True)
            if epoch in theirs and is_number(mine) and is_number(theirs[epoch])]


def relative_differences(a: RunView, b: RunView) -> list[tuple[int, float]]:
    """(epoch, a's validation score relative to b's, minus 1) of the shared epochs."""
    return [(epoch, mine / theirs - 1) for epoch, mine, theirs in shared_epochs(a, b) if theirs]


def comparison_text(member: RunView, side: RunView) -> str:
    """The finding: each shared epoch's validation scores and relative difference, and whether all are within
    the tolerance; times where both ran on one device."""
    metric = member.metric
    shared = shared_epochs(member, side)
    differences = {epoch: mine / theirs - 1 for epoch, mine, theirs in shared if theirs}  # relative_differences
    who = f"{member.id} in {precision(member)} ({member.key}) against {precision(side)} ({side.key})"
    if not shared:
        return f"{who}: no epoch with a validation {metric} in both, nothing to compare yet."
    listing = "; ".join(f"epoch {epoch} {fmt_metric(mine, metric)} vs {fmt_metric(theirs, metric)} "
                        f"({differences[epoch]:+.2%})" for epoch, mine, theirs in shared)
    outside = [epoch for epoch, difference in differences.items() if abs(difference) > PRECISION_TOLERANCE]
    count = f"{len(shared)} epoch{'s' if len(shared) != 1 else ''} they share"
    if outside:
        verdict = (f"not every one of the {count} is within {PRECISION_TOLERANCE:.0%}: epoch"
                   f"{'s' if len(outside) > 1 else ''} {', '.join(map(str, outside))} "
                   f"{'differ' if len(outside) > 1 else 'differs'} by more")
    else:
        largest = max(map(abs, differences.values()))
        verdict = (f"all {count} are within {PRECISION_TOLERANCE:.0%} (largest {largest:.2%}): {precision(member)} "
                   f"trains like {precision(side)} here")
    if member.device == side.device and member.median_epoch_seconds and side.median_epoch_seconds:
        ratio = side.median_epoch_seconds / member.median_epoch_seconds
        time = (f" Median training time per epoch on {member.device}: {member.median_epoch_seconds:,.0f} s vs "
                f"{side.median_epoch_seconds:,.0f} s ({precision(member)} {ratio:.2f}× as fast).")
    else:
        time = (f" Times not compared: {member.key} trained on {member.device}, {side.key} on {side.device}.")
    unfinished = [r.key + " " + r.status_text for r in (member, side) if not r.completed]
    extra = f" Unfinished: {', '.join(unfinished)}." if unfinished else ""
    return f"{who}, validation {metric} per epoch: {listing}; {verdict}.{time}{extra}"


def precision_comparisons(study: Study, grid: str) -> list[Finding]:
    """A finding per pair of precisions of one configuration (see ``precision_pairs``)."""
    return [Finding(f"{GRID_TITLES[grid]}: one configuration in two precisions", comparison_text(member, side))
            for member, side in precision_pairs(study, grid)]
