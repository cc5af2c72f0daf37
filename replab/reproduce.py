"""The ``replab reproduce`` command: the study's grids trained one after another, then its report.

``replab reproduce [--quick] [--with-cnn] [--out DIR] [--data-dir D] [--device DEV] [--amp MODE] [--dry-run] [--yes]
[--keep-checkpoints]``
    Trains the LSTM grid and the ViT grid (and the four CNN baselines with ``--with-cnn``) into ``DIR/runs``,
    one run after another, skipping completed runs and resuming unfinished ones, then writes the report into
    ``DIR/report``. Run it again after an interruption: it continues where it stopped. Without ``--quick``:
    the specification's full settings (default DIR ``reproduce``). Exit code: 0 if every run completed,
    otherwise that of ``replab grid`` (1 a run diverged or failed, 130 interrupted); the report is written in
    every case. ``--dry-run`` times a few real training steps of every run and prints the estimated time and
    peak memory (``replab.estimate``), writing nothing. The full profile on a CPU prints that estimate first and,
    above 2 hours, asks ``Continue? [y/N]`` on a terminal; ``--yes`` skips the question, and without ``--yes`` a
    non-interactive input ends with exit code 2 and the estimate in the message. The quick profile never asks.
    On disk, each completed run keeps its logs and one ``best.pt`` with its weights only (``replab.checkpoints``):
    about 0.85 GB for the six LSTMs (136-162 MB each), 50 MB for the seven ViTs (``reproduce --quick``: 867 MiB in
    all, ``du -sh``); the run in progress also holds ``last.pt`` and ``previous.pt`` (0.4-0.5 GB each for an LSTM)
    until it completes, so the folder peaks near 1.8 GB while lstm-6 trains. ``--keep-checkpoints`` keeps all
    three for every run, with the full training state (about 7.7 GB for the LSTM grid).

    ``--quick`` (default DIR ``reproduce-quick``) shows the whole system end to end on a laptop CPU in 10 to 15
    minutes and under 1 GB of disk, with the profile ``QUICK`` below: every configuration for 2 epochs; the LSTM
    on 2 training batches and 1 evaluation batch per epoch (an LSTM step takes a few seconds on a CPU: the
    40k-word output layer dominates), the ViT on 10 training and 3 evaluation batches, the CNNs (``--with-cnn``)
    on 10 and 5. Its numbers demonstrate the pipeline, not the specification's results, and the report says so.
    Quick and full runs never mix: DIR records its profile in ``reproduce.json`` and a different profile is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from replab import runner
from replab.arguments import DATA_DIR_HELP, DEVICE_HELP, KEEP_CHECKPOINTS_HELP, PROGRESS_HELP
from replab.estimate import fmt_duration
from replab.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from replab.experiments import AMP_MODES, GRIDS, RunSettings
from replab.report.demo import PROFILE_FILE
from replab.report.document import write_report
from replab.system import pick_device


@dataclass(frozen=True)
class GridProfile:
    """How ``reproduce`` trains one grid; ``None`` keeps the specification's value."""

    epochs: int | None = None
    batch_size: int | None = None
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    grids: dict[str, GridProfile]
    experiments: tuple[str, ...] = ()  # restrict to these ids (empty: every experiment of the grids)


FULL = Profile("full", {grid: GridProfile() for grid in ("lstm", "vit", "cnn")})
QUICK = Profile("quick", {
    "lstm": GridProfile(epochs=2, limit_train_batches=2, limit_eval_batches=1),
    "vit": GridProfile(epochs=2, limit_train_batches=10, limit_eval_batches=3),
    "cnn": GridProfile(epochs=2, limit_train_batches=10, limit_eval_batches=5),
})


class ProfileError(ValueError):
    pass


def check_profile(folder: Path, profile: Profile, record_it: bool = True) -> None:
    """Record the profile of a reproduction folder (unless ``record_it`` is false), and refuse one made with
    another profile."""
    record = {"profile": dataclasses.asdict(profile)}
    record["profile"]["experiments"] = list(profile.experiments)
    path = folder / PROFILE_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != record:
            raise ProfileError(
                f"{folder} holds runs of the {previous['profile']['name']!r} profile "
                f"({json.dumps(previous['profile'])}); this is {json.dumps(record['profile'])}. Quick and full runs "
                "never mix: pass another --out."
            )
        return
    if not record_it:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def plan_grids(args, profile: Profile, runs: Path) -> list[tuple[str, list[str], RunSettings, dict]]:
    """What ``reproduce`` trains: (grid, experiment ids, run settings, hyperparameter overrides) per grid."""
    plan = []
    for grid in ("lstm", "vit") + (("cnn",) if args.with_cnn else ()):
        ids = [i for i in GRIDS[grid] if not profile.experiments or i in profile.experiments]
        if not ids:
            continue
        settings = profile.grids[grid]
        run_settings = RunSettings(device=args.device, amp=args.amp, data_dir=args.data_dir, out=str(runs),
                                   progress=args.progress, limit_train_batches=settings.limit_train_batches,
                                   limit_eval_batches=settings.limit_eval_batches,
                                   keep_checkpoints=args.keep_checkpoints)
        plan.append((grid, ids, run_settings, {"epochs": settings.epochs, "batch_size": settings.batch_size}))
    return plan


CONFIRM_ABOVE_SECONDS = 2 * 3600  # a full reproduction on a CPU estimated longer than this asks first


def estimate_cost(grids: list[tuple], profile: Profile) -> float:
    """Print the estimated cost of every run of the reproduction (real steps timed; fp32 and bf16 side by side on
    a CPU with bf16 instructions); returns the total seconds at the chosen precision."""
    plan = [run for _, ids, settings, overrides in grids for run in runner.plan_grid(ids, settings, overrides)]
    print(f"reproduce ({profile.name}): estimated cost, from a few real training steps of each run:")
    return runner.show_estimates(plan)


def confirm_cost(seconds: float, assume_yes: bool, stdin=None) -> bool:
    """Whether to start a reproduction estimated at ``seconds``: yes below 2 hours or with ``--yes``; else ask on
    a terminal (``Continue? [y/N]``). Non-interactive input without ``--yes``: a ``UsageError`` (exit 2)."""
    stdin = stdin if stdin is not None else sys.stdin
    if assume_yes or seconds <= CONFIRM_ABOVE_SECONDS:
        return True
    if not stdin.isatty():
        raise UsageError(f"the full reproduction is estimated at {fmt_duration(seconds)} on this CPU (over "
                         f"{CONFIRM_ABOVE_SECONDS // 3600} hours): pass --yes to start it, or try --quick or a GPU")
    print(f"The full reproduction is estimated at {fmt_duration(seconds)} on this CPU. Continue? [y/N] ", end="",
          flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the quick profile: 2 epochs on a few batches, the whole system in 10-15 minutes on a "
                        "laptop CPU, under 1 GB on disk (default: the specification's full settings)")
    parser.add_argument("--with-cnn", action="store_true", help="also train the four CNN baselines")
    parser.add_argument("--out", metavar="DIR", help="folder for runs/ and report/ (default: reproduce, or "
                        "reproduce-quick)")
    parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--amp", choices=AMP_MODES, default="none",
                        help="autocast precision: none (fp32), bf16 or fp16 (CUDA) (default: none)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=PROGRESS_HELP)
    parser.add_argument("--keep-checkpoints", action="store_true", help=KEEP_CHECKPOINTS_HELP)
    parser.add_argument("--dry-run", action="store_true",
                        help="time a few real steps of every run, print the estimated time and memory; no files")
    parser.add_argument("--yes", action="store_true",
                        help="start a full CPU reproduction estimated over 2 hours without asking")


def cmd_reproduce(args) -> int:
    try:
        profile = QUICK if args.quick else FULL
        out = Path(args.out or ("reproduce-quick" if args.quick else "reproduce"))
        check_profile(out, profile, record_it=False)
    except ProfileError as error:
        raise UsageError(str(error)) from None
    runs = out / "runs"
    grids = plan_grids(args, profile, runs)
    if args.dry_run:
        estimate_cost(grids, profile)
        print("(nothing was written)")
        return EXIT_OK
    if profile is FULL:
        try:
            on_cpu = pick_device(args.device).type == "cpu"
        except ValueError as error:
            raise UsageError(str(error)) from None
        if on_cpu and not confirm_cost(estimate_cost(grids, profile), args.yes):
            print("reproduce: not started", file=sys.stderr)
            return EXIT_USAGE
    check_profile(out, profile)
    worst = EXIT_OK
    for grid, ids, run_settings, overrides in grids:
        print(f"reproduce ({profile.name}): {grid} grid: {', '.join(ids)}")
        worst = max(worst, runner.run_grid(ids, run_settings, overrides))
        if worst == EXIT_INTERRUPTED:
            break
    report = write_report([runs], out / "report", data_dir=args.data_dir)
    print(f"report: {report.out / 'report.html'} ({len(report.study.runs)} runs)")
    return worst
