"""Running experiments: one run, a grid of runs (skipping completed ones, resuming started ones), their cost
estimates, and the exit codes the ``replab`` commands return.

Used by ``replab.cli`` (``train``, ``grid``) and ``replab.report.commands`` (``reproduce``); it imports neither.
Exit codes: 0 success, 1 a run diverged or failed, 2 bad input (nothing created), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from replab.console import closing_line
from replab.experiments import RunSettings, get_experiment, with_overrides

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input: one line for the user, exit code 2."""


def _status_code(summary: dict) -> int:
    return {"completed": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(summary.get("status"), EXIT_RUN_FAILED)


def _train_one(experiment, settings) -> int:
    from replab.train import RunError, train

    try:
        summary = train(experiment, settings)
    except (RunError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(closing_line(experiment.id, summary))
    return _status_code(summary)


# ------------------------------------------------------------------------------------------------ estimates
def _epochs_done(experiment, settings: RunSettings) -> int:
    """Epochs a resumed run has already (read from its metrics; 0 for a new or overwritten run)."""
    from replab.runlog import RunDir

    if not settings.resume or settings.overwrite:
        return 0
    return len(RunDir(Path(settings.out) / experiment.id).read_metrics())


def estimate_plan(plan: list[tuple]) -> list:
    """The cost of each ``(experiment, settings)`` of a plan (``settings`` None: completed, skipped)."""
    from replab.estimate import estimate_run, skipped
    from replab.train import RunError

    estimates = []
    for experiment, settings in plan:
        if settings is None:
            estimates.append(skipped(experiment))
            continue
        try:
            estimates.append(estimate_run(experiment, settings, _epochs_done(experiment, settings)))
        except (RunError, ValueError) as error:
            raise UsageError(str(error)) from None
    return estimates


def print_estimates(plan: list[tuple]) -> int:
    """``--dry-run``: time a few real steps of every run of the plan, print the table; nothing is written."""
    from replab.estimate import load_note, table

    estimates = estimate_plan(plan)
    print(table(estimates))
    print(f"(measured with {load_note()}; estimates only, nothing was written)")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ grids
def plan_grid(experiment_ids: list[str], settings: RunSettings, overrides: dict | None = None) -> list[tuple]:
    """``(experiment, settings)`` of each run of a grid; settings ``None`` for a completed run (skipped), and
    ``resume`` set for a started one. ``overrides``: hyperparameters for every experiment (``None`` ignored)."""
    from replab.train import completed_summary

    try:
        experiments = [with_overrides(get_experiment(i), **(overrides or {})) for i in experiment_ids]
    except (KeyError, ValueError) as error:
        raise UsageError(str(error).strip("'\"")) from None
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
        code = _train_one(experiment, run_settings)
        if code == EXIT_INTERRUPTED:
            return code
        worst = max(worst, code)
    return worst
