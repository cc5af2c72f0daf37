"""``--dry-run`` cost estimates: the arithmetic (fake clock), one real short estimate, and the reproduce prompt."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from replab import reproduce
from replab.cli import main
from replab.estimate import Estimate, Sampling, _timed, estimate_run, fmt_duration, skipped, table, total_seconds
from replab.exits import UsageError
from replab.experiments import GRIDS, RunSettings, get_experiment, with_overrides
from replab.reproduce import CONFIRM_ABOVE_SECONDS, confirm_cost
from replab.runner import epochs_done, plan_grid
from tests.report.fakes import rising, write_run

CPU = torch.device("cpu")


def fake_clock(durations: list[float]):
    """A clock whose consecutive (start, end) readings are ``durations`` apart (and 128 s between pairs; use
    binary fractions so that the differences are exact)."""
    readings = itertools.chain.from_iterable((128.0 * i, 128.0 * i + d) for i, d in enumerate(durations))
    return lambda: next(readings)


def test_estimate_arithmetic():
    x = Estimate("vit-2", "cpu", step_seconds=0.5, eval_step_seconds=0.2, train_batches=352, eval_batches=40,
                 test_batches=79, epochs=10)
    assert x.epoch_seconds == pytest.approx(352 * 0.5 + 40 * 0.2)
    assert x.total_seconds == pytest.approx(10 * (352 * 0.5 + 40 * 0.2) + 2 * 79 * 0.2)  # + test of last and best
    cnn = Estimate("cnn-resnet", "cpu", 0.5, 0.2, 352, 40, 79, epochs=180)
    short = Estimate("cnn-resnet", "cpu", 0.5, 0.2, 352, 40, 79, epochs=10)
    assert cnn.total_seconds - cnn.test_seconds == pytest.approx(18 * (short.total_seconds - short.test_seconds))
    done = Estimate("vit-2", "-", 0.0, 0.0, 0, 0, 0, epochs=0, epochs_done=10)
    assert done.total_seconds == 0 and total_seconds([x, done]) == x.total_seconds
    assert "completed already" in table([x, done]) and fmt_duration(x.total_seconds) in table([x, done])
    assert [fmt_duration(s) for s in (45, 725, 3 * 3600 + 7 * 60)] == ["45 s", "12 min 05 s", "3 h 07 min"]


def test_timing_uses_the_median_and_stops_at_the_budget():
    calls = []
    step = calls.append
    times = _timed(iter(range(100)), step, 2, 5, 3, 60.0, fake_clock([0.5, 0.5, 9.0, 0.5, 0.5]), CPU)
    assert calls == list(range(7)) and times == [0.5, 0.5, 9.0, 0.5, 0.5]  # 2 warm-up steps untimed
    calls.clear()
    times = _timed(iter(range(100)), step, 1, 10, 3, 10.0, fake_clock([4.0] * 10), CPU)
    assert len(times) == 3 and len(calls) == 4  # 3 timed steps of 4 s pass the 10 s budget (min_steps 3)


def test_estimate_of_real_steps_with_a_fake_clock(data_root, tmp_path):
    """Real vit-2 steps (batch 16) timed by a fake clock: the estimate is exactly the arithmetic of the table."""
    experiment = with_overrides(get_experiment("vit-2"), batch_size=16, epochs=4)
    settings = RunSettings(device="cpu", data_dir=str(data_root), out=str(tmp_path / "runs"),
                           limit_train_batches=7, limit_eval_batches=3)
    sampling = Sampling(warmup=1, steps=5, min_steps=3, budget_seconds=60.0, eval_warmup=1, eval_steps=3)
    clock = fake_clock([0.5, 0.5, 9.0, 0.5, 0.75] + [0.25, 0.375, 0.25])  # 5 training steps, then 3 evaluation batches
    x = estimate_run(experiment, settings, epochs_done=1, sampling=sampling, clock=clock)
    assert (x.step_seconds, x.eval_step_seconds) == (0.5, 0.25)  # medians: the 9 s outlier does not count
    assert (x.train_batches, x.eval_batches, x.test_batches, x.epochs, x.steps_timed) == (7, 3, 3, 3, 5)
    assert x.epoch_seconds == 7 * 0.5 + 3 * 0.25
    assert x.total_seconds == 3 * (7 * 0.5 + 3 * 0.25) + 2 * 3 * 0.25
    assert x.peak_mb > 100 and x.memory_source == "rss"
    assert not (tmp_path / "runs").exists()


def test_real_dry_run_prints_the_estimate_and_writes_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["train", "vit-2", "--dry-run", "--batch-size", "16", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "s/step", "s/eval"]
    row = lines[1].split()
    assert row[0] == "vit-2" and row[3] == "2813+313" and row[5] == "10"  # 45,000 / 16 and 5,000 / 16 batches
    assert float(row[1]) > 0 and float(row[4]) == pytest.approx(2813 * float(row[1]) + 313 * float(row[2]), rel=0.01)
    assert lines[2].startswith("total") and "nothing was written" in lines[-1]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_grid_plan_skips_completed_runs_and_counts_the_epochs_a_resume_keeps(tmp_path):
    write_run(tmp_path, "vit-1", rising(0.3, 0.6, 10), rising(0.3, 0.7, 10))  # completed, 10 of 10 epochs
    write_run(tmp_path, "vit-2", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], status=None, epochs=10)  # 3 of 10 epochs done
    plan = plan_grid(["vit-1", "vit-2", "vit-3"], RunSettings(out=str(tmp_path)), {"epochs": None})
    (vit1, s1), (vit2, s2), (vit3, s3) = plan
    assert s1 is None and skipped(vit1).total_seconds == 0
    assert s2.resume and epochs_done(vit2, s2) == 3
    assert not s3.resume and epochs_done(vit3, s3) == 0


# ------------------------------------------------------------------------------------------------ the prompt
class Input(io.StringIO):
    def __init__(self, text: str, tty: bool):
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_confirmation_rules(capsys):
    over = CONFIRM_ABOVE_SECONDS + 1
    assert confirm_cost(CONFIRM_ABOVE_SECONDS, assume_yes=False, stdin=Input("", tty=False))  # 2 h: no question
    assert confirm_cost(over, assume_yes=True, stdin=Input("", tty=False))
    with pytest.raises(UsageError, match=r"estimated at 2 h 00 min .*--yes"):
        confirm_cost(over, assume_yes=False, stdin=Input("y\n", tty=False))
    assert confirm_cost(over, assume_yes=False, stdin=Input("y\n", tty=True))
    assert "Continue? [y/N]" in capsys.readouterr().out
    for answer in ("n\n", "\n", ""):
        assert not confirm_cost(over, assume_yes=False, stdin=Input(answer, tty=True))


@pytest.fixture
def no_training(monkeypatch):
    """``reproduce`` without training: the grids are recorded, and the estimate is 3 hours (printed)."""
    grids, estimated = [], []
    monkeypatch.setattr("replab.runner.run_grid", lambda ids, settings, overrides: grids.append(ids) or 0)
    monkeypatch.setattr(reproduce, "estimate_cost", lambda g, p: estimated.append(p.name) or 3 * 3600.0)
    return grids, estimated


def test_full_reproduce_on_cpu_needs_yes_when_not_interactive(tmp_path, no_training, capsys):
    grids, estimated = no_training
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2  # pytest's stdin: no terminal
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "estimated at 3 h 00 min" in err and "--yes" in err
    assert estimated == ["full"] and grids == [] and not (tmp_path / "r").exists()
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--device", "cpu", "--yes"]) == 0
    assert grids == [list(GRIDS["lstm"]), list(GRIDS["vit"])]


def test_quick_reproduce_never_asks(tmp_path, no_training):
    grids, estimated = no_training
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert estimated == [] and len(grids) == 2


def test_reproduce_dry_run_writes_nothing(tmp_path, no_training, capsys):
    grids, estimated = no_training
    assert main(["reproduce", "--dry-run", "--out", str(tmp_path / "r")]) == 0
    assert estimated == ["full"] and grids == [] and not (tmp_path / "r").exists()


@pytest.fixture
def fake_estimates(monkeypatch):
    """``estimate_run`` without training: 2 s per step in fp32, 0.5 s with --amp bf16 (the settings it got)."""
    seen = []

    def estimate(experiment, settings, epochs_done=0, **_):
        seen.append((experiment.id, settings.amp))
        step = 0.5 if settings.amp == "bf16" else 2.0
        return Estimate(experiment.id, "cpu", step, step / 4, 100, 10, 10, epochs=experiment.epochs - epochs_done)

    monkeypatch.setattr("replab.runner.estimate_run", estimate)
    return seen


@pytest.mark.parametrize("command", [["train", "lstm-1"], ["grid", "lstm"]])
def test_dry_run_on_a_bf16_cpu_prints_fp32_and_bf16_side_by_side(command, tmp_path, fake_estimates, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr("replab.runner.native_bf16_cpu", lambda: True)
    assert main([*command, "--dry-run", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    ids = [i for i, _ in fake_estimates if _ == "none"]
    assert fake_estimates == [(i, "none") for i in ids] + [(i, "bf16") for i in ids]  # fp32 first, then bf16
    assert "bf16 matrix instructions" in out and "bf16 speed-up" in out
    per_run = [line for line in out.splitlines() if line.split()[:1] == [ids[0]] and "x" in line.split()[-1]]
    assert per_run and per_run[0].split()[-1] == "4.00x"  # 2 s against 0.5 s per step and per evaluation batch
    assert not any(tmp_path.iterdir())


def test_dry_run_without_bf16_instructions_says_why_bf16_is_not_estimated(tmp_path, fake_estimates, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr("replab.runner.native_bf16_cpu", lambda: False)
    assert main(["train", "lstm-1", "--dry-run", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert fake_estimates == [("lstm-1", "none")]
    assert "--amp bf16 not estimated: this CPU has no bf16 matrix instructions" in out and "speed-up" not in out


def test_dry_run_with_an_amp_chosen_estimates_that_precision_only(tmp_path, fake_estimates, monkeypatch, capsys):
    monkeypatch.setattr("replab.runner.native_bf16_cpu", lambda: True)
    assert main(["train", "lstm-1", "--dry-run", "--device", "cpu", "--amp", "bf16", "--out", str(tmp_path)]) == 0
    assert fake_estimates == [("lstm-1", "bf16")] and "speed-up" not in capsys.readouterr().out
