"""Findings on memory (Problem 3 Q7) and overfitting (Q8), per grid: every statement carries its numbers.

Memory: the steady-state ranking, the optimizer state (configurations 1-4 share the model) and the cost of depth
(least-squares slope per layer against what the parameters explain). Overfitting: the train-validation gap at the
last epoch, validation past its peak (early stopping), and the gap by optimizer and by depth.
"""

from __future__ import annotations

from replab.report.finding import Finding, counted_runs
from replab.report.formatting import fmt_count, fmt_metric, is_number
from replab.report.reference import GRID_TITLES, display
from replab.report.runs import OPTIMIZER_STATE_COPIES, RunView
from replab.report.study import Study, completed


def _problem3_question(grid: str, number: int) -> str:
    """Problem 3's questions are asked of the image models; the report answers them for the LSTMs too."""
    return f"Problem 3 Q{number}" if grid != "lstm" else f"as Problem 3 Q{number}"


# ------------------------------------------------------------------------------------------------ memory
def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def _steady(run: RunView) -> float | None:
    value = run.memory.get("steady_mean_mb")
    return value if is_number(value) else None


def memory_findings(study: Study) -> list[Finding]:
    """Problem 3 Q7: the ranking per grid, and how much parameters, optimizer state and depth explain."""
    found = []
    for grid in GRID_TITLES:
        runs = sorted((r for r in study.grid(grid) if _steady(r) is not None), key=_steady, reverse=True)
        if not runs:
            continue
        topic = f"{GRID_TITLES[grid]}: memory ({_problem3_question(grid, 7)})"
        sources = ", ".join(sorted({f"{r.memory.get('source')} on {r.device}" for r in runs}))
        ranking = " > ".join(f"{r.id} {_steady(r):,.0f}" for r in runs)
        text = f"Steady-state memory, largest first (MiB, {sources}): {ranking}."
        if any(r.memory.get("source") == "rss" for r in runs):
            text += (" Resident memory of a CPU process includes the Python runtime, PyTorch and the dataset in "
                     "every number: the differences between configurations say more than the absolute values.")
        found.append(Finding(topic, text))
        found += _optimizer_memory(topic, runs) + _depth_memory(topic, runs)
    return found


def _optimizer_memory(topic: str, runs: list[RunView]) -> list[Finding]:
    """Configurations 1-4 share the model: the optimizer state is the only expected difference."""
    same_model = [r for r in runs if 1 <= r.number <= 4 and r.optimizer in OPTIMIZER_STATE_COPIES and r.learnable]
    if len({r.optimizer for r in same_model}) < 2:
        return []
    copy_mib = same_model[0].learnable * 4 / 2**20
    listing = "; ".join(f"{r.optimizer_name} ({OPTIMIZER_STATE_COPIES[r.optimizer]} extra) {_steady(r):,.0f}"
                        for r in sorted(same_model, key=lambda r: r.number))
    measured = max(map(_steady, same_model)) - min(map(_steady, same_model))
    expected = copy_mib * (max(OPTIMIZER_STATE_COPIES[r.optimizer] for r in same_model)
                           - min(OPTIMIZER_STATE_COPIES[r.optimizer] for r in same_model))
    return [Finding(topic, (
        f"Optimizer state (configurations 1-4, same model with {fmt_count(same_model[0].learnable)} learnable "
        f"parameters, one float32 copy = {copy_mib:,.1f} MiB): Adam/AdamW keep 2 extra copies (first and second "
        f"moments), SGD with momentum 1 (velocity), SGD none. Measured steady means (MiB): {listing}. Spread "
        f"{measured:,.0f} MiB against {expected:,.1f} MiB expected from the optimizer state alone."))]


def _depth_memory(topic: str, runs: list[RunView]) -> list[Finding]:
    """Runs that differ only in depth (same optimizer and block): memory per added layer, and its parts."""
    found = []
    groups: dict[tuple, list[RunView]] = {}
    for run in runs:
        groups.setdefault((run.optimizer, run.experiment.get("block")), []).append(run)
    for group in groups.values():
        depths = {r.layers for r in group if r.layers and r.learnable}
        if len(depths) < 2:
            continue
        group = sorted((r for r in group if r.layers and r.learnable), key=lambda r: r.layers)
        per_layer = _slope([(r.layers, _steady(r)) for r in group])
        params_per_layer = _slope([(r.layers, r.learnable) for r in group])
        static = params_per_layer * 4 * (2 + OPTIMIZER_STATE_COPIES.get(group[0].optimizer, 0)) / 2**20
        text = (f"Depth ({', '.join(r.id for r in group)}: {group[0].optimizer_name}, "
                f"{'/'.join(str(r.layers) for r in group)} layers): each added layer adds {per_layer:,.1f} MiB of "
                f"steady memory (least-squares slope); its {params_per_layer:,.0f} parameters with their gradients and "
                f"optimizer state account for {static:,.1f} MiB")
        rest = per_layer - static
        text += (f", the remaining {rest:,.1f} MiB per layer are the activations it keeps for the backward pass"
                 if rest > 0 else ", i.e. the measured increase is no larger than the parameters explain")
        found.append(Finding(topic, text + "."))
    return found


# ------------------------------------------------------------------------------------------------ overfitting
def _gap_text(run: RunView) -> str:
    return (f"{run.id} (train {fmt_metric(run.final(f'train_{run.metric}'), run.metric)}, validation "
            f"{fmt_metric(run.final(f'val_{run.metric}'), run.metric)}, gap {run.gap_text})")


def overfitting_findings(study: Study) -> list[Finding]:
    """Problem 3 Q8: the train-validation gap, validation peaks before the end, and what early stopping gave."""
    found = []
    for grid in GRID_TITLES:
        runs = [r for r in study.grid(grid) if r.epochs_completed]
        finished = [r for r in completed(runs) if r.gap is not None]  # gaps compared at the same (last) epoch
        topic = f"{GRID_TITLES[grid]}: overfitting ({_problem3_question(grid, 8)})"
        if finished:
            by_gap = sorted(finished, key=lambda r: r.gap, reverse=True)
            text = f"Train-validation gap at the last epoch of the completed runs: largest {_gap_text(by_gap[0])}"
            if len(by_gap) > 1:
                text += f", smallest {_gap_text(by_gap[-1])}"
            found.append(Finding(topic, text + "."))
        found += (_peaks(topic, runs) if runs else []) + _classes(topic, finished)
    return found


def _peaks(topic: str, runs: list[RunView]) -> list[Finding]:
    peaked = [r for r in runs if r.epochs_since_peak and r.status != "diverged"]  # divergence is no overfitting
    if not peaked:
        return [Finding(topic, (
            f"No run's validation score peaked before its last epoch ({counted_runs(len(runs))}): within the epochs "
            "trained, none is past its best on the validation data."))]
    parts = []
    for run in sorted(peaked, key=lambda r: -r.epochs_since_peak):
        since = run.epochs_since_peak
        part = (f"{run.id} peaked at epoch {run.best_epoch} of {run.epochs[-1]} ({since} epoch"
                f"{'s' if since > 1 else ''} before the end; validation {fmt_metric(run.best_val, run.metric)} then "
                f"{fmt_metric(run.final(f'val_{run.metric}'), run.metric)} at the end")
        best_test, final_test = run.test("test_best"), run.test("test_final")
        if best_test is not None and final_test is not None:
            part += (f"; test {run.metric} of the best checkpoint {fmt_metric(best_test, run.metric)} vs last "
                     f"epoch {fmt_metric(final_test, run.metric)}")
        parts.append(part + ")")
    return [Finding(topic, "Validation past its peak (keeping the best-validation checkpoint, i.e. early stopping, "
                           "matters here): " + "; ".join(parts) + ".")]


def _classes(topic: str, runs: list[RunView]) -> list[Finding]:
    """Controlled comparisons of the final gap: the optimizer (configurations 1-4, one model) and the depth (runs
    sharing optimizer and block)."""
    groups = {"optimizer (configurations 1-4, same model)": [r for r in runs if 1 <= r.number <= 4]}
    by_setup: dict[tuple, list[RunView]] = {}
    for run in runs:
        by_setup.setdefault((run.optimizer, run.experiment.get("block")), []).append(run)
    for (optimizer, block), group in by_setup.items():
        setup = ", ".join([display(optimizer)] + ([display(block)] if block else []))
        groups[f"depth ({setup} runs)"] = group
    found = []
    for name, group in groups.items():
        vary = {r.optimizer for r in group} if name.startswith("optimizer") else {r.layers for r in group}
        if len(vary) < 2 or group[0].layers is None:
            continue
        ranked = sorted(group, key=lambda r: r.gap, reverse=True)
        listing = ", ".join(f"{r.id} ({r.configuration}) {r.gap_text.split(' (')[0]}" for r in ranked)
        found.append(Finding(topic, f"Final train-validation gap by {name}, largest first: {listing}."))
    return found
