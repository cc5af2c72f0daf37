"""Findings computed from the runs: every statement carries its numbers, and none is written without data.

Topics: the runs' settings; which configuration to choose for wall-clock time and for generalization (Problem 1
Q4, Problem 3 Q3); changing only the optimizer (configurations 1-4, Q4); PreNorm vs PostNorm (6 vs 7, Q5); the
CNN comparison (Q6); memory (Q7); overfitting (Q8). Accuracy differences are compared with the binomial sampling
noise of the validation images (one seed per configuration: that noise is a lower bound on the real spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from replab.report.demo import demo_verdict, mark_demo
from replab.report.precision import CURVES_QUESTION, precision_comparisons
from replab.report.reference import CNN_REFERENCE, GRID_TITLES, display
from replab.report.runs import (
    OPTIMIZER_STATE_COPIES,
    SAME_COST_MARGIN,
    RunView,
    Study,
    completed,
    fmt_count,
    fmt_diff,
    fmt_metric,
    fmt_seconds,
    is_number,
)
from replab.report.tables import best_first, best_vit
from replab.runlog import better

STUDY_GRIDS = ("lstm", "vit")  # the grids of the specification's questions


NEGLIGIBLE_PERPLEXITY = 0.01  # relative perplexity difference not called a difference (no noise estimate exists)


@dataclass
class Finding:
    topic: str
    text: str
    question: tuple[int, int] | None = None  # (problem, question) it answers; None: about the runs themselves


def findings(study: Study) -> list[Finding]:
    """Every finding the runs support, in the report's order, each with the question it answers."""
    answers = [(None, settings_findings(study))]
    answers += [(CURVES_QUESTION[grid], [Finding(*found) for found in precision_comparisons(study, grid)])
                for grid in GRID_TITLES]
    for grid, problem, (choice, optimizers) in (("lstm", 1, (4, 4)), ("vit", 3, (3, 4))):
        answers += [((problem, choice), choice_findings(study, grid) + depth_findings(study, grid)),
                    ((problem, optimizers), optimizer_findings(study, grid))]
    answers += [((3, 5), norm_findings(study)), ((3, 6), cnn_findings(study)), ((3, 7), memory_findings(study)),
                ((3, 8), overfitting_findings(study))]
    for question, found in answers:
        for finding in found:
            finding.question = question
            if question is not None:  # a number of a demo run answers nothing: the sentence says so
                finding.text = mark_demo(finding.text, study)
    return [finding for _, found in sorted(answers, key=lambda a: a[0] or (0, 0)) for finding in found]


# ------------------------------------------------------------------------------------------------ headline
HEADLINE_GRIDS = (("lstm", "Problem 1"), ("vit", "Problem 3"), ("cnn", "Problem 3 Q6"))


def headline(study: Study) -> list[str]:
    """The report's summary, one line per grid (how many configurations completed, the best run's validation and
    test scores, what is not at its full setting) and one comparing with the specification's reference CNNs."""
    lines = []
    for grid, problem in HEADLINE_GRIDS:
        runs, missing = study.grid(grid), study.missing(grid)
        if not runs and grid == "cnn":
            continue
        done = completed(runs)
        text = f"{GRID_TITLES[grid]} ({problem}): {len(done)} of {len(runs) + len(missing)} configurations completed"
        text += "".join(f"; {part}" for part in _unfinished(runs) + ([f"not run: {', '.join(missing)}"] if missing
                                                                     else []))
        scored = best_first([r for r in runs if r.best_val is not None])
        if scored:
            best = best_first(done)[0] if done else scored[0]
            test = best.test()
            text += (f". {'Best' if done else 'Best so far'}: {best.description}, best validation {best.metric} "
                     f"{_score(best)}, " + (f"test {best.metric} {fmt_metric(test, best.metric)}" if test is not None
                                            else f"no test {best.metric} yet"))
        reasons = sorted({reason for r in runs if not r.full_spec for reason in r.limits + r.deviations})
        if reasons:
            text += f"; NOT at their full setting: {'; '.join(reasons)}"
        lines.append(text + ".")
    comparison = _reference_headline(study)
    return lines + ([comparison] if comparison else [])


def _reference_headline(study: Study) -> str | None:
    """Our best ViT and our CNN runs against the specification's reference CNNs, on test accuracy."""
    references = list(CNN_REFERENCE.values())
    tests = [test for _, _, test, _ in references]
    params = [p for _, _, _, p in references]
    vit = best_vit(study)
    parts = []
    if vit is not None and vit.test() is not None:
        name, _, ref_test, ref_params = max(references, key=lambda c: c[2])
        parts.append(f"our best ViT ({vit.id}, {fmt_metric(vit.test(), 'accuracy')} with "
                     f"{fmt_count(vit.parameters)} parameters) is {ref_test - vit.test() * 100:.2f} pp below the best "
                     f"of them, {name}")
    own = []
    for run in completed(study.grid("cnn")):
        reference = CNN_REFERENCE.get(run.experiment.get(run.spec.variant))
        if reference is not None and run.test() is not None:
            own.append(reference[2] - run.test() * 100)
    if own:
        spread = f"{min(own):.2f}-{max(own):.2f}" if len(own) > 1 else f"{own[0]:.2f}"
        parts.append(f"our {_runs(len(own)).replace('run', 'CNN run')} {'are' if len(own) > 1 else 'is'} {spread} pp "
                     "below their references")
    if not parts:
        return None
    return (f"Against the specification's reference CNNs ({min(tests):.2f}-{max(tests):.2f}% test accuracy with "
            f"{min(params):,}-{max(params):,} parameters): " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------------------------------ helpers
def _score(run: RunView) -> str:
    return f"{fmt_metric(run.best_val, run.metric)} (epoch {run.best_epoch})"


def _loss(run: RunView) -> str:
    loss = run.final("train_loss")
    return f"{loss:.3f}" if loss is not None else "—"


def noise(a: RunView, b: RunView) -> float | None:
    """Two standard errors of the difference of two validation accuracies (binomial sampling of the images)."""
    if a.metric != "accuracy" or not (a.validation_size and b.validation_size):
        return None
    variance = sum(r.best_val * (1 - r.best_val) / r.validation_size for r in (a, b))
    return 2 * math.sqrt(variance)


def compare(a: RunView, b: RunView) -> str:
    """``a`` against ``b`` on the best validation score: the difference, who is better, and the noise."""
    difference = a.best_val - b.best_val
    text = fmt_diff(difference, a.metric)
    if a.metric != "accuracy":
        text += f" ({difference / b.best_val:+.1%})"
    if a.metric != "accuracy" and abs(difference / b.best_val) < NEGLIGIBLE_PERPLEXITY:
        return text + (f": below {NEGLIGIBLE_PERPLEXITY:.0%}, too small to separate {a.id} and {b.id} with one seed "
                       "per configuration")
    margin = noise(a, b)
    if margin is not None and abs(difference) <= margin:
        return text + (f", within the sampling noise of ±{margin * 100:.2f} pp (2 standard errors on "
                       f"{a.validation_size:,} validation images): the data do not separate {a.id} and {b.id}")
    if difference == 0:
        return text + ": equal"
    winner = a if better(a.best_val, b.best_val, a.higher_is_better) else b
    demo = demo_verdict(winner, a, b)
    if demo:
        return f"{text}: {demo}"
    detail = f", beyond the sampling noise of ±{margin * 100:.2f} pp" if margin is not None else ""
    if a.metric != "accuracy":
        detail = (f", by more than the {NEGLIGIBLE_PERPLEXITY:.0%} not called a difference (one seed per "
                  "configuration: the run-to-run spread is not measured)")
    return text + f": {winner.id} better{detail}"


def _in_configs(runs: list[RunView], first: int, last: int) -> list[RunView]:
    return [r for r in runs if first <= r.number <= last]


def _unfinished(runs: list[RunView]) -> list[str]:
    return [f"{r.key} {r.status_text}" for r in runs if not r.completed]


# ------------------------------------------------------------------------------------------------ settings
def _setting(run: RunView) -> str:
    """What a run's times and memory depend on besides the model, e.g. ``cpu (AMD EPYC, AVX512), amp none, train ≤ 5
    batches/epoch`` (device, amp, batch limits, processes)."""
    world_size = run.record.config.get("world_size", 1)
    processes = [f"{world_size} processes"] if world_size > 1 else []
    return ", ".join([run.device, f"amp {run.settings.get('amp') or 'none'}", *run.limits, *processes])


def _time_taken(runs: list[RunView]) -> str:
    return fmt_seconds(sum(r.total_seconds for r in runs if is_number(r.total_seconds)))


def settings_findings(study: Study) -> list[Finding]:
    """Runs not at the specification's setting, unfinished and missing runs, grids measured under mixed settings."""
    topic, found = "Runs and settings", []
    if not study.runs:
        return [Finding(topic, f"No run folder was found under {', '.join(map(str, study.roots))}.")]
    partial = [r for r in study.runs if not r.full_spec]
    if partial:
        reasons = sorted({reason for r in partial for reason in r.limits + r.deviations})
        found.append(Finding(topic, (
            f"{len(partial)} of {len(study.runs)} runs are NOT at their full setting ({'; '.join(reasons)}): their "
            "numbers answer the specification's questions only as far as that setting allows.")))
    unfinished = _unfinished([r for r in study.runs if not r.side])  # side runs: listed with their state
    if unfinished:
        found.append(Finding(topic, f"Unfinished runs (kept in every table and figure): {', '.join(unfinished)}."))
    missing = [i for grid in GRID_TITLES for i in study.missing(grid)]
    if missing:
        found.append(Finding(topic, f"Missing from their grid (never run): {', '.join(missing)}."))
    spent = [f"{GRID_TITLES[grid]} {_time_taken(runs)} ({_runs(len(runs))})"
             for grid in GRID_TITLES if (runs := study.grid(grid))]
    found.append(Finding(topic, f"Time the runs took (wall-clock time of their epochs): {'; '.join(spent)}."))
    for grid in GRID_TITLES:
        groups: dict[str, list[str]] = {}
        for run in study.grid(grid):
            groups.setdefault(_setting(run), []).append(run.id)
        if len(groups) > 1:
            listing = "; ".join(f"{setting}: {', '.join(ids)}" for setting, ids in groups.items())
            found.append(Finding(topic, (
                f"The {GRID_TITLES[grid]} runs were measured under {len(groups)} different settings (device, amp, "
                f"batch limits, processes): {listing}. Their times are comparable only within one setting, and "
                "their memory across settings only roughly.")))
    return found


# ------------------------------------------------------------------------------------------------ choices
def choice_findings(study: Study, grid: str) -> list[Finding]:
    """Problem 1 Q4 / Problem 3 Q3: among configurations 1-6, the fastest and the best generalizing."""
    runs = _in_configs(study.grid(grid), 1, 6)
    candidates = completed(runs)
    if not candidates:
        return []
    topic = f"{GRID_TITLES[grid]}: which configuration ({'Problem 1 Q4' if grid == 'lstm' else 'Problem 3 Q3'})"
    scope = f"{len(candidates)} completed configurations among 1-6"
    absent = sorted({f"{grid}-{n}" for n in range(1, 7)} - {r.id for r in candidates})
    if absent:
        scope += f" (not completed: {', '.join(absent)})"
    timed = [r for r in candidates if r.median_epoch_seconds is not None]
    found = [Finding(topic, _wall_clock_choice(timed, scope))] if timed else []
    ranked = best_first(candidates)
    best = ranked[0]
    test = best.test()
    text = (f"For generalization: {best.description}, {best.hyperparameters}. Its best validation {best.metric} is "
            f"{_score(best)}, the best of the {scope}"
            + (f"; the test {best.metric} of that checkpoint is {fmt_metric(test, best.metric)}" if test else ""))
    if len(ranked) > 1:
        runner_up = ranked[1]
        text += f". Runner-up: {runner_up.id} with {_score(runner_up)}; difference {compare(best, runner_up)}"
    found.append(Finding(topic, text + "."))
    return found


def _wall_clock_choice(runs: list[RunView], scope: str) -> str:
    """The configuration for wall-clock time: among those whose epochs cost the least (the quickest one and every
    run the measurements do not separate from it, see ``RunView.slower_than``), the best on validation."""
    by_speed = sorted(runs, key=lambda r: r.fastest_epoch_seconds)
    quickest = by_speed[0]
    cheapest = [r for r in by_speed if not r.slower_than(quickest)]
    choice = best_first(cheapest)[0]
    ranking = ", ".join(f"{r.id} {r.fastest_epoch_seconds:.1f} s" for r in by_speed)
    text = (f"For wall-clock time: {choice.description}, {choice.hyperparameters}. Fastest training epoch (the "
            f"one least slowed by other work on the machine) of the {scope}: {ranking}.")
    if len(cheapest) > 1:
        others = [r.id for r in cheapest if r is not quickest]
        one = len(others) == 1
        text += (f" {_join(others)} {'is' if one else 'are'} not separated from {quickest.id}: "
                 f"{'its fastest epoch' if one else 'the fastest epoch of each'} is at most "
                 f"{SAME_COST_MARGIN:.0%} above {quickest.id}'s median epoch ({quickest.median_epoch_seconds:.1f} s), "
                 f"so the machine's load varied more than their cost. Of these {len(cheapest)}, {choice.id} "
                 f"reaches the best validation {choice.metric},")
    else:
        text += f" {choice.id} reaches a best validation {choice.metric} of"
    text += f" {_score(choice)}, after {fmt_seconds(choice.total_seconds)} of training in all."
    devices: dict[str, list[str]] = {}
    for run in by_speed:
        devices.setdefault(run.device, []).append(run.id)
    if len(devices) > 1:
        text += (" These runs trained on different devices (" + "; ".join(f"{_join(ids)} on {device}" for device, ids
                 in devices.items()) + "): their times compare the devices as much as the configurations.")
    if len(cheapest) < len(by_speed):
        slowest = by_speed[-1]
        ratio = slowest.fastest_epoch_seconds / quickest.fastest_epoch_seconds
        text += f" The slowest, {slowest.id}, needs {ratio:.1f}× {quickest.id}'s time at its fastest epoch."
    return text


def time_comparison(a: RunView, b: RunView) -> str:
    """Training time per epoch of two runs, and whether the measurements separate them (never across devices)."""
    text = f"{a.seconds_text} vs {b.seconds_text}"
    if a.device != b.device:
        return text + f" (not compared: {a.id} trained on {a.device}, {b.id} on {b.device})"
    slower = a if a.slower_than(b) else b if b.slower_than(a) else None
    if slower is None:
        return text + " (not separated: the machine's load varied more than the difference)"
    return text + (f" ({slower.id} slower: even its fastest epoch took more than {SAME_COST_MARGIN:.0%} longer than "
                   "the other's median one)")


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


def _problem3_question(grid: str, number: int) -> str:
    """Problem 3's questions are asked of the image models; the report answers them for the LSTMs too."""
    return f"Problem 3 Q{number}" if grid != "lstm" else f"as Problem 3 Q{number}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


# ------------------------------------------------------------------------------------------------ optimizers
# (optimizer, the optimizers to compare it with, in order of preference, what the contrast isolates)
OPTIMIZER_CONTRASTS = (
    ("adamw", ("adam",), "weight decay (AdamW, decoupled weight decay, against Adam without)"),
    ("momentum", ("sgd",), "momentum (SGD with momentum 0.9 against plain SGD)"),
    ("adam", ("momentum", "sgd"), "Adam's adaptive per-parameter steps (Adam against SGD{})"),
)


def optimizer_findings(study: Study, grid: str) -> list[Finding]:
    """Problem 3 Q4 (and the LSTM's configurations 1-4): only the optimizer changes."""
    runs = _in_configs(study.grid(grid), 1, 4)
    by_optimizer = {r.optimizer: r for r in completed(runs)}
    if len(by_optimizer) < 2:
        return []
    topic = f"{GRID_TITLES[grid]}: configurations 1-4, only the optimizer changes"
    metric = next(iter(by_optimizer.values())).metric
    listing = "; ".join(
        f"{display(o)} ({r.id}) {_score(r)}, final training loss {_loss(r)}, {r.seconds_text}"
        for o, r in by_optimizer.items())
    text = f"Best validation {metric}: {listing}."
    unfinished = _unfinished(runs) + [f"{i} missing" for i in study.missing(grid) if i in {f"{grid}-{n}" for n in
                                                                                           range(1, 5)}]
    if unfinished:
        text += f" Not completed: {', '.join(unfinished)}."
    found = [Finding(topic, text)]
    for a, others, what in OPTIMIZER_CONTRASTS:
        b = next((o for o in others if o in by_optimizer), None)
        if a in by_optimizer and b is not None:
            ra, rb = by_optimizer[a], by_optimizer[b]
            what = what.format(" with momentum" if b == "momentum" else "")
            found.append(Finding(topic, (
                f"Effect of {what}: best validation {metric} {fmt_metric(ra.best_val, metric)} vs "
                f"{fmt_metric(rb.best_val, metric)}, difference {compare(ra, rb)}; final training loss "
                f"{_loss(ra)} vs {_loss(rb)}.")))
    return found


# ------------------------------------------------------------------------------------------------ depth
def depth_findings(study: Study, grid: str) -> list[Finding]:
    """Completed runs that differ only in their number of layers (same optimizer and block: the ViT's
    configurations 2, 5 and 6, the LSTM's 2, 5 and 6): score, size and cost by depth, and each step deeper."""
    groups: dict[tuple, list[RunView]] = {}
    for run in completed(_in_configs(study.grid(grid), 1, 6)):
        if run.layers:
            groups.setdefault((run.optimizer, run.experiment.get("block")), []).append(run)
    found = []
    for (optimizer, block), group in groups.items():
        if len({r.layers for r in group}) < 2:
            continue
        group = sorted(group, key=lambda r: (r.layers, r.number))
        metric = group[0].metric
        setup = ", ".join([display(optimizer)] + ([display(block)] if block else []))
        listing = "; ".join(f"{r.id} {r.layers} layer{'s' if r.layers != 1 else ''}: {_score(r)}, "
                            f"{fmt_count(r.parameters)} parameters, {r.seconds_text}" for r in group)
        steps = "; ".join(f"{deeper.id} against {shallower.id}: {compare(deeper, shallower)}"
                          for shallower, deeper in zip(group, group[1:], strict=False))
        text = (f"Only the depth changes ({setup}). Best validation {metric}: {listing}. Each step deeper: {steps}. "
                f"Training time, deepest against shallowest: {time_comparison(group[-1], group[0])}.")
        found.append(Finding(f"{GRID_TITLES[grid]}: depth, only the number of layers changes", text))
    return found


# ------------------------------------------------------------------------------------------------ PreNorm/PostNorm
def norm_findings(study: Study) -> list[Finding]:
    """Problem 3 Q5: configurations 6 (PreNorm) and 7 (PostNorm), written only when both completed."""
    pre, post = study.get("vit-6"), study.get("vit-7")
    if pre is None or post is None or not (pre.completed and post.completed):
        return []
    first = lambda r: fmt_metric(r.series("val_accuracy")[0], "accuracy")
    text = (f"PreNorm ({pre.id}) against PostNorm ({post.id}), otherwise identical ({pre.layers} vs {post.layers} "
            f"layers, {pre.optimizer_name} vs {post.optimizer_name}): best validation accuracy {_score(pre)} vs "
            f"{_score(post)}, difference {compare(pre, post)}. After the first epoch: {first(pre)} vs {first(post)}; "
            f"final training loss {_loss(pre)} vs {_loss(post)}; "
            f"training time {time_comparison(pre, post)}.")
    return [Finding("PreNorm vs PostNorm (Problem 3 Q5)", text)]


# ------------------------------------------------------------------------------------------------ CNNs
def cnn_findings(study: Study) -> list[Finding]:
    """Problem 3 Q6: our best ViT against the specification's CNNs, and our CNN runs against their references.

    Only test accuracies are compared (the same 10,000 test images on both sides): the reference validation
    accuracies come from the reference training's own split of the training images, not ours.
    """
    topic, found = "ViT against CNNs (Problem 3 Q6)", []
    vit = best_vit(study)
    if vit is not None:
        name, _, ref_test, ref_params = max(CNN_REFERENCE.values(), key=lambda c: c[2])
        text = (f"Our best ViT (chosen on our validation accuracy), {vit.description}, reaches "
                f"{fmt_metric(vit.test(), 'accuracy')} test accuracy with {fmt_count(vit.parameters)} parameters. "
                f"The specification's best CNN on the test images, {name}, reaches {ref_test:.2f}% with "
                f"{ref_params:,} parameters")
        if vit.test() is not None:
            difference = ref_test - vit.test() * 100
            text += (f": {abs(difference):.2f} pp {'more' if difference > 0 else 'less'} test accuracy with "
                     f"{vit.parameters / ref_params:.1f}× {'fewer' if vit.parameters > ref_params else 'more'} "
                     "parameters")
        text += (" (reference numbers from the specification, not measured here; compared on test accuracy, the "
                 "same 10,000 test images on both sides)")
        if not vit.full_spec:
            text += f"; {vit.id} is {vit.not_full_text}, so this comparison is not meaningful"
        found.append(Finding(topic, text + "."))
    for run in completed(study.grid("cnn")):
        reference = CNN_REFERENCE.get(run.experiment.get(run.spec.variant))
        if reference is None:
            continue
        name, _, ref_test, ref_params = reference
        test = run.test()
        text = (f"Our {name} run ({run.id}): {fmt_metric(test, 'accuracy')} test accuracy with "
                f"{fmt_count(run.parameters)} parameters, against the specification's {ref_test:.2f}% with "
                f"{ref_params:,}")
        if test is not None:
            text += f" ({fmt_diff(test - ref_test / 100, 'accuracy')})"
        text += f"; our best validation accuracy {fmt_metric(run.best_val, 'accuracy')}"
        found.append(Finding(topic, text + ("" if run.full_spec else f"; {run.id} is {run.not_full_text}") + "."))
    return found


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
            f"No run's validation score peaked before its last epoch ({_runs(len(runs))}): within the epochs trained, "
            "none is past its best on the validation data."))]
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
