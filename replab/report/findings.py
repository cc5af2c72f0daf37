"""Findings computed from the runs: every statement carries its numbers, and none is written without data.

Topics: the runs' settings; which configuration to choose for wall-clock time and for generalization (Problem 1
Q4, Problem 3 Q3); changing only the optimizer (configurations 1-4, Q4); PreNorm vs PostNorm (6 vs 7, Q5); the
CNN comparison (Q6); memory (Q7) and overfitting (Q8), from ``replab.report.memory_overfitting``. Accuracy
differences are compared with the binomial sampling noise of the validation images (one seed per configuration:
that noise is a lower bound on the real spread).
"""

from __future__ import annotations

import math

from replab.report.demo import demo_verdict, mark_demo
from replab.report.finding import Finding, counted_runs
from replab.report.formatting import fmt_count, fmt_diff, fmt_metric, fmt_seconds, is_number
from replab.report.memory_overfitting import memory_findings, overfitting_findings
from replab.report.precision import CURVES_QUESTION, precision_comparisons
from replab.report.reference import CNN_REFERENCE, GRID_TITLES, display
from replab.report.runs import SAME_COST_MARGIN, RunView
from replab.report.study import Study, completed
from replab.report.tables import best_first, best_vit
from replab.runlog import better

NEGLIGIBLE_PERPLEXITY = 0.01  # relative perplexity difference not called a difference (no noise estimate exists)


def findings(study: Study) -> list[Finding]:
    """Every finding the runs support, in the report's order, each with the question it answers."""
    answers = [(None, settings_findings(study))]
    answers += [(CURVES_QUESTION[grid], precision_comparisons(study, grid))
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
        reasons = sorted({reason for r in runs if not r.full_spec for reason in r.differences})
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
        reference = CNN_REFERENCE.get(run.variant)
        if reference is not None and run.test() is not None:
            own.append(reference[2] - run.test() * 100)
    if own:
        spread = f"{min(own):.2f}-{max(own):.2f}" if len(own) > 1 else f"{own[0]:.2f}"
        parts.append(f"our {counted_runs(len(own)).replace('run', 'CNN run')} {'are' if len(own) > 1 else 'is'} "
                     f"{spread} pp below their references")
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
        reasons = sorted({reason for r in partial for reason in r.differences})
        found.append(Finding(topic, (
            f"{len(partial)} of {len(study.runs)} runs are NOT at their full setting ({'; '.join(reasons)}): their "
            "numbers answer the specification's questions only as far as that setting allows.")))
    unfinished = _unfinished([r for r in study.runs if not r.side])  # side runs: listed with their state
    if unfinished:
        found.append(Finding(topic, f"Unfinished runs (kept in every table and figure): {', '.join(unfinished)}."))
    missing = [i for grid in GRID_TITLES for i in study.missing(grid)]
    if missing:
        found.append(Finding(topic, f"Missing from their grid (never run): {', '.join(missing)}."))
    spent = [f"{GRID_TITLES[grid]} {_time_taken(runs)} ({counted_runs(len(runs))})"
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
        reference = CNN_REFERENCE.get(run.variant)
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
