"""Running experiments: one run, a grid of runs (skipping completed ones, resuming started ones), and their cost
estimates, for the commands that train (``replab train``/``grid`` in ``replab.cli``, ``replab reproduce`` in
``replab.reproduce``), which import it; it imports no command module. Exit codes: ``replab.exits``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from replab.console import closing_line
from replab.estimate import estimate_run, load_note, precision_table, skipped, table, total_seconds
from replab.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, UsageError
from replab.experiments import Experiment, RunSettings, configure
from replab.runlog import RunDir
from replab.system import native_bf16_cpu, pick_device
from replab.train import RunError, completed_summary, train


def _status_code(summary: dict) -> int:
    return {"completed": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(summary.get("status"), EXIT_RUN_FAILED)


def run_one(experiment, settings) -> int:
    """Train one resolved experiment (``replab.experiments.configure``) and print its closing line; returns the exit
    code of its status. Bad input (``RunError``) is a ``UsageError``."""
    try:
        summary = train(experiment, settings)
    except (RunError, ValueError) as error:  # ValueError: a device that does not exist (``pick_device``)
        raise UsageError(str(error)) from None
    print(closing_line(experiment.id, summary))
    return _status_code(summary)


# ------------------------------------------------------------------------------------------------ estimates
def epochs_done(experiment, settings: RunSettings) -> int:
    """Epochs a resumed run has already (read from its metrics; 0 for a new or overwritten run)."""
    if not settings.resume or settings.overwrite:
        return 0
    return len(RunDir(Path(settings.out) / experiment.id).read_metrics())


def estimate_plan(plan: list[tuple]) -> list:
    """The cost of each ``(experiment, settings)`` of a plan (``settings`` None: completed, skipped)."""
    estimates = []
    for experiment, settings in plan:
        if settings is None:
            estimates.append(skipped(experiment))
            continue
        try:
            estimates.append(estimate_run(experiment, settings, epochs_done(experiment, settings)))
        except (RunError, ValueError) as error:
            raise UsageError(str(error)) from None
    return estimates


def bf16_plan(plan: list[tuple]) -> tuple[list[tuple] | None, str]:
    """The plan again with ``--amp bf16``, to estimate beside fp32, and why (or why not).

    Only where every run trains in fp32 (``--amp none``) on a CPU with bf16 matrix instructions (AVX512-BF16 or
    AMX-BF16): there bf16 autocast may be several times faster. Without them bf16 runs a slow fallback, so it is
    not estimated (the note says why); on a GPU, or with an ``--amp`` chosen, the plan's own precision is all.
    """
    runs = [settings for _, settings in plan if settings is not None]
    if not runs or any(s.amp != "none" for s in runs):
        return None, ""
    try:
        if any(pick_device(s.device).type != "cpu" for s in runs):
            return None, ""
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not native_bf16_cpu():
        return None, ("--amp bf16 not estimated: this CPU has no bf16 matrix instructions (avx512_bf16, amx_bf16), "
                      "so bf16 would run slower than fp32 here")
    return [(e, s if s is None else dataclasses.replace(s, amp="bf16")) for e, s in plan], \
        "this CPU has bf16 matrix instructions: the runs estimated again with --amp bf16"


def show_estimates(plan: list[tuple]) -> float:
    """Time a few real steps of every run of the plan and print the table; on a CPU with bf16 instructions and
    ``--amp none``, the same with ``--amp bf16`` and the two side by side (``bf16_plan``). Returns the estimated
    seconds of the plan as given."""
    estimates = estimate_plan(plan)
    print(table(estimates))
    alternative, why = bf16_plan(plan)
    if alternative is not None:
        print(f"\n{why}:")
        print(precision_table(estimates, estimate_plan(alternative)))
    elif why:
        print(f"({why})")
    print(f"(measured with {load_note()}; estimates only)")
    return total_seconds(estimates)


def print_estimates(plan: list[tuple]) -> int:
    """``--dry-run``: time a few real steps of every run of the plan, print the table; nothing is written."""
    show_estimates(plan)
    print("(nothing was written)")
    return EXIT_OK


def configured(experiment_id: str, overrides: dict | None = None) -> Experiment:
    """``experiments.configure`` for a command: the resolved experiment, or a ``UsageError`` naming what is wrong."""
    try:
        return configure(experiment_id, **(overrides or {}))
    except ValueError as error:
        raise UsageError(str(error)) from None


# ------------------------------------------------------------------------------------------------ grids
def plan_grid(experiment_ids: list[str], settings: RunSettings, overrides: dict | None = None) -> list[tuple]:
    """``(experiment, settings)`` of each run of a grid; settings ``None`` for a completed run (skipped), and
    ``resume`` set for a started one. ``overrides``: hyperparameters for every experiment (``None`` ignored)."""
    experiments = [configured(i, overrides) for i in experiment_ids]
    plan = []
    for experiment in experiments:
        if not settings.overwrite and completed_summary(experiment, settings):
            plan.append((experiment, None))
        elif not settings.overwrite and (Path(settings.out) / experiment.id / "config.json").exists():
            plan.append((experiment, dataclasses.replace(settings, resume=True)))
        else:
            plan.append((experiment, settings))
    return plan


def run_grid(experiment_ids: list[str], settings: RunSettings, overrides: dict | None = None) -> int:
    """Train the experiments one after another: completed ones are skipped, unfinished ones resumed.

    ``overrides``: hyperparameters applied to every experiment (``None`` values ignored). Every configuration
    is validated before the first run starts. Returns the worst exit code (130 stops the grid at once).
    """
    worst = EXIT_OK
    for experiment, run_settings in plan_grid(experiment_ids, settings, overrides):
        if run_settings is None:
            print(f"{experiment.id}: completed already, skipped")
            continue
        code = run_one(experiment, run_settings)
        if code == EXIT_INTERRUPTED:
            return code
        worst = max(worst, code)
    return worst
