"""The trainer end to end on the real data with tiny limits: logs, checkpoints, resume, faults, DDP."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from replab.cli import main
from replab.loop import EpochLoop
from replab.runlog import RunDir, attempt_history
from replab.system import StopSignals
from replab.tasks import ImageClassificationTask
from replab.train import Trainer
from tests.conftest import with_old_vit_names

TINY_VIT = ["--batch-size", "32", "--limit-train-batches", "3", "--limit-eval-batches", "2", "--no-progress"]
TINY_LSTM = ["--batch-size", "2", "--limit-train-batches", "2", "--limit-eval-batches", "1", "--no-progress"]
TIMING_KEYS = {"train_seconds", "eval_seconds", "wall_seconds", "throughput", "memory"}
METRIC_KEYS = {"epoch", "train_loss", "val_loss", "lr", "throughput_unit"} | TIMING_KEYS


def cli(out: Path, *argv: str) -> int:
    return main([*argv, "--out", str(out)])


def _default_sigint() -> None:
    # A test suite started in the background by a script inherits an ignored SIGINT (POSIX shells without job
    # control), and Python then installs no KeyboardInterrupt handler: give the child the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def replab_process(out: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "replab", *argv, "--out", str(out)], env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_default_sigint)


def run_in_fresh_process(out: Path, *argv: str) -> None:
    """``replab <argv> --out <out>`` in its own process, to the end; fails the test with its output if it fails."""
    process = replab_process(out, *argv)
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output


def wait_for_first_epoch(run: RunDir, process: subprocess.Popen, timeout: float = 900) -> None:
    """Until epoch 1's record and its checkpoint are both on disk (the checkpoint is written after the record)."""
    deadline = time.time() + timeout
    while not (run.read_metrics() and run.last_checkpoint.exists()):
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, "the run did not finish its first epoch in time"
        time.sleep(0.02)


def scores(records: list[dict]) -> list[dict]:
    """The metrics that must be reproducible (everything but timings and memory)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def assert_scores_close(got: dict, want: dict, rel_tol: float, abs_tol: float) -> None:
    """One epoch's scores: the same keys, floats within the tolerances (DDP sums in another order), the rest equal."""
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], float):
            assert math.isclose(got[key], want[key], rel_tol=rel_tol, abs_tol=abs_tol), (key, got[key], want[key])
        else:
            assert got[key] == want[key]


@pytest.fixture(autouse=True)
def _data(data_root, monkeypatch):
    monkeypatch.setenv("REPLAB_DATA", str(data_root))


def test_vit_run_writes_every_file_and_field(tmp_path):
    assert cli(tmp_path, "train", "vit-2", "--epochs", "2", *TINY_VIT) == 0
    run = RunDir(tmp_path / "vit-2")
    for path in (run.config, run.metrics, run.summary, run.log, run.best_checkpoint):
        assert path.exists(), path
    config = run.read_config()
    assert config["experiment"]["id"] == "vit-2" and config["experiment"]["optimizer"] == "adamw"
    assert config["experiment"]["batch_size"] == 32 and config["settings"]["limit_train_batches"] == 3
    assert config["parameters"] == {"total": 1_086_730, "learnable": 1_086_730}
    env = config["environment"]
    for key in ("python", "torch", "device", "device_name", "cuda", "cudnn", "replab_version", "git_commit"):
        assert key in env
    (attempt,) = config["attempts"]
    assert attempt["started"] == config["started"] and (attempt["from_epoch"], attempt["from_step"]) == (1, 0)
    assert attempt["git_commit"] == env["git_commit"] and attempt["torch"] == env["torch"] == torch.__version__
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert METRIC_KEYS | {"train_accuracy", "val_accuracy"} <= set(r)
        assert 0 <= r["val_accuracy"] <= 1 and r["throughput_unit"] == "images/s"
        assert r["memory"]["source"] == "rss" and r["memory"]["peak_mb"] > 0
        # 2 eval batches of 32: accuracy is an exact fraction of 64 images
        assert math.isclose(r["val_accuracy"] * 64, round(r["val_accuracy"] * 64), abs_tol=1e-9)
    assert records[1]["wall_seconds"] > records[0]["wall_seconds"]
    summary = run.read_summary()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    best = max(records, key=lambda r: r["val_accuracy"])
    assert summary["best_val"] == best["val_accuracy"] and summary["best_epoch"] == best["epoch"]
    assert summary["final_val_accuracy"] == records[-1]["val_accuracy"]
    assert {"loss", "accuracy"} <= set(summary["test_final"]) and summary["test_best"]["epoch"] == best["epoch"]
    assert summary["memory"]["peak_mb"] > 0
    assert "epoch 2" in run.log.read_text()


def test_a_completed_run_keeps_one_best_checkpoint_of_weights_unless_told_to_keep_all(tmp_path, capsys):
    """While it trains a run keeps what --resume needs; completed, only best.pt with the weights of its best epoch
    (what test_best scored); --keep-checkpoints keeps the three checkpoints with the full training state."""
    assert cli(tmp_path / "lean", "train", "vit-2", "--epochs", "2", *TINY_VIT) == 0
    lean = RunDir(tmp_path / "lean" / "vit-2")
    assert sorted(p.name for p in lean.path.glob("*.pt")) == ["best.pt"]
    best = torch.load(lean.best_checkpoint, weights_only=True)
    assert set(best) == {"epoch", "model", "best", "experiment"}  # no optimizer, scheduler, RNG: nothing resumes
    summary = lean.read_summary()
    assert best["epoch"] == summary["best_epoch"] == summary["test_best"]["epoch"]
    assert "deleted last.pt and previous.pt" in lean.log.read_text()

    assert cli(tmp_path / "kept", "train", "vit-2", "--epochs", "2", "--keep-checkpoints", *TINY_VIT) == 0
    kept = RunDir(tmp_path / "kept" / "vit-2")
    assert sorted(p.name for p in kept.path.glob("*.pt")) == ["best.pt", "last.pt", "previous.pt"]
    last = torch.load(kept.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2 and {"model", "optimizer", "rng", "scheduler"} <= set(last)
    kept_best = torch.load(kept.best_checkpoint, weights_only=True)
    assert {"optimizer", "rng"} <= set(kept_best) and kept_best["epoch"] == best["epoch"]
    assert all(torch.equal(kept_best["model"][k], v) for k, v in best["model"].items())  # the same weights
    assert scores(kept.read_metrics()) == scores(lean.read_metrics())  # the same training, bit for bit
    assert kept.read_summary()["test_best"] == summary["test_best"]

    capsys.readouterr()  # more epochs for a completed run: only with its training state
    assert cli(tmp_path / "lean", "train", "vit-2", "--epochs", "3", "--resume", *TINY_VIT) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "kept only best.pt" in err and "--overwrite" in err
    assert len(lean.read_metrics()) == 2 and lean.read_summary()["status"] == "completed"  # left as it was
    assert cli(tmp_path / "kept", "train", "vit-2", "--epochs", "3", "--resume", *TINY_VIT) == 0
    assert len(kept.read_metrics()) == 3


def test_lstm_run_logs_perplexity_and_embeddings(tmp_path):
    assert cli(tmp_path, "train", "lstm-2", "--epochs", "1", *TINY_LSTM) == 0
    run = RunDir(tmp_path / "lstm-2")
    config = run.read_config()
    assert config["task"]["embeddings"].startswith("learned") and config["task"]["metric"] == "perplexity"
    assert config["parameters"] == {"total": 34_107_392, "learnable": 34_107_392}
    (record,) = run.read_metrics()
    assert METRIC_KEYS | {"train_perplexity", "val_perplexity"} <= set(record)
    assert math.isclose(record["val_perplexity"], math.exp(record["val_loss"]), rel_tol=1e-9)
    assert record["throughput_unit"] == "tokens/s"
    assert record["val_perplexity"] < 40479 * 2  # near-uniform at worst after two steps
    assert run.read_summary()["test_final"]["perplexity"] > 1


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path):
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        assert cli(tmp_path / name, "train", "vit-2", "--epochs", "1", "--seed", seed, *TINY_VIT) == 0
    a, b, c = (scores(RunDir(tmp_path / n / "vit-2").read_metrics()) for n in "abc")
    assert a == b and a != c


def test_completed_run_is_not_overwritten_without_overwrite(tmp_path, capsys):
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", *TINY_VIT) == 0
    run = RunDir(tmp_path / "vit-2")
    before = {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()}
    capsys.readouterr()
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", *TINY_VIT) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()} == before
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", "--resume", *TINY_VIT) == 0  # nothing left to do
    assert {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()} == before
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", "--overwrite", *TINY_VIT) == 0
    assert run.summary.stat().st_mtime_ns != before["summary.json"]
    assert len(run.read_config()["attempts"]) == 1  # a fresh start: no history of the run it replaced



def test_bf16_on_a_gpu_that_only_emulates_it_warns_and_names_fp16(tmp_path, monkeypatch, caplog):
    """A T4 (compute capability 7.5): ``torch.cuda.is_bf16_supported()`` says yes (emulation), the trainer warns."""
    import replab.train
    from replab.experiments import RunSettings, get_experiment

    monkeypatch.setattr(replab.train, "pick_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    for capability, warned in (((7, 5), True), ((8, 0), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        caplog.clear()
        Trainer(get_experiment("vit-2").resolved(), RunSettings(amp="bf16", out=str(tmp_path)))
        assert ("bf16 is emulated" in caplog.text and "--amp fp16" in caplog.text) == warned


def test_attempt_history_keeps_the_first_start_and_rebuilds_an_older_config():
    now = {"started": "2026-11-29T14:24:02+0000", "from_epoch": 8, "from_step": 0, "git_commit": "new"}
    assert attempt_history(None, now) == {"started": now["started"], "attempts": [now]}
    older = {"started": "2026-11-29T11:47:28+0000", "environment": {"git_commit": "old", "torch": "2.13.0"}}
    history = attempt_history(older, now)
    assert history["started"] == older["started"] and history["attempts"][1] == now
    assert history["attempts"][0]["git_commit"] == "old" and history["attempts"][0]["from_epoch"] is None
    third = {**now, "started": "2026-11-30T09:00:00+0000", "from_epoch": 9}
    assert attempt_history({**older, **history}, third)["attempts"] == [*history["attempts"], third]


def test_resume_after_a_kill_gives_the_uninterrupted_metrics(tmp_path):
    args = ["train", "vit-2", "--epochs", "3", "--batch-size", "32", "--limit-train-batches", "25",
            "--limit-eval-batches", "2", "--no-progress"]
    # Every attempt in a fresh process: bit-identical numbers need the same setup (the thread count, for one).
    run_in_fresh_process(tmp_path / "straight", *args)
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    killed = RunDir(tmp_path / "killed" / "vit-2")
    process = replab_process(tmp_path / "killed", *args)
    wait_for_first_epoch(killed, process)
    process.kill()  # during epoch 2
    process.wait()
    assert len(killed.read_metrics()) == 1 and killed.read_summary() is None
    assert cli(tmp_path / "killed", *args) == 2  # an unfinished run needs --resume
    run_in_fresh_process(tmp_path / "killed", *args, "--resume")
    assert scores(killed.read_metrics()) == expected
    assert killed.read_summary()["status"] == "completed"


def test_checkpoints_with_the_old_vit_names_resume_to_the_uninterrupted_metrics(tmp_path):
    """A run whose checkpoints hold the ViT's keys from before its blocks were ``layers`` and its head ``norm`` +
    ``classifier`` resumes from them (model, optimizer state) with the numbers of a run never stopped."""
    assert cli(tmp_path / "straight", "train", "vit-2", "--epochs", "2", *TINY_VIT) == 0
    # --keep-checkpoints: a completed run otherwise keeps only its weights-only best.pt, which --resume cannot use
    assert cli(tmp_path / "old", "train", "vit-2", "--epochs", "1", "--keep-checkpoints", *TINY_VIT) == 0
    run = RunDir(tmp_path / "old" / "vit-2")
    checkpoints = sorted(run.path.glob("*.pt"))
    assert run.last_checkpoint in checkpoints and run.best_checkpoint in checkpoints
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["model"] = with_old_vit_names(checkpoint["model"])
        assert "transformer.0.attn.qkv.weight" in checkpoint["model"] and "mlp_head.1.weight" in checkpoint["model"]
        torch.save(checkpoint, path)
    assert cli(tmp_path / "old", "train", "vit-2", "--epochs", "2", "--resume", *TINY_VIT) == 0
    straight = RunDir(tmp_path / "straight" / "vit-2")
    assert scores(run.read_metrics()) == scores(straight.read_metrics())
    summary, expected = run.read_summary(), straight.read_summary()
    assert summary["status"] == "completed" and len(run.read_config()["attempts"]) == 2
    assert (summary["test_final"], summary["test_best"]) == (expected["test_final"], expected["test_best"])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_the_step_it_arrives_in_exits_130_then_resumes_there(tmp_path, monkeypatch, stop):
    args = ["train", "vit-2", "--epochs", "2", "--batch-size", "32", "--limit-train-batches", "40",
            "--limit-eval-batches", "2", "--no-progress", "--checkpoint-minutes", "0"]
    run = RunDir(tmp_path / "vit-2")
    process = replab_process(tmp_path, *args)
    wait_for_first_epoch(run, process)
    process.send_signal(stop)  # early in epoch 2 (40 steps), or just before epoch 1's end-of-epoch stop check
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 130, output
    summary = run.read_summary()
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert stop.name in summary["reason"] and "--resume" in summary["reason"], summary["reason"]
    assert f"{stop.name} received" in run.log.read_text()
    checkpoint = torch.load(run.last_checkpoint, weights_only=True)
    assert checkpoint["epoch"] == 1
    # Epoch 1's files are on disk a moment before the run checks for a signal at the epoch's end: a signal in that
    # moment stops the run there (epoch 2 not begun, nothing to save inside it); later, after a step of epoch 2.
    steps = checkpoint["partial"]["steps"] if "partial" in checkpoint else 0
    if steps:
        assert checkpoint["partial"]["epoch"] == 2 and steps < 40
        assert f"at epoch 2, step {steps} of 40, with a checkpoint there" in summary["reason"]
    else:
        assert f"stopped by {stop.name} after epoch 1;" in summary["reason"]
    seen_while_training = []  # the stale "interrupted" summary must not describe the resumed run
    train_epoch = EpochLoop.train_epoch
    monkeypatch.setattr(EpochLoop, "train_epoch",
                        lambda self, *a: seen_while_training.append(run.read_summary()) or train_epoch(self, *a))
    assert cli(tmp_path, *args, "--resume") == 0
    assert seen_while_training == [None]
    assert [(a["from_epoch"], a["from_step"]) for a in run.read_config()["attempts"]] == [(1, 0), (2, steps)]
    assert run.read_summary()["status"] == "completed" and len(run.read_metrics()) == 2


def noisy_steps(monkeypatch) -> None:
    """Each training step draws from the global RNG, as dropout does: a resume must restore that RNG too."""
    task_step = ImageClassificationTask.step

    def noisy_step(self, objective, batch):
        loss, stats = task_step(self, objective, batch)
        return loss * (1 + 0.01 * torch.rand(())), stats

    monkeypatch.setattr(ImageClassificationTask, "step", noisy_step)


@pytest.fixture
def python_ctrl_c():
    """SIGINT handled as in an interactive Python (``KeyboardInterrupt``) for a test that sends it to its own
    process: a suite started in the background by a script inherits an ignored SIGINT, which ``StopSignals``
    rightly leaves ignored, so the signal would never arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def signals_at_steps(monkeypatch, at: dict[int, list[int]]) -> list[int]:
    """Training steps that send this process the signals ``at[n]`` as (1-based, over the whole run) step ``n``
    begins; returns the list that counts the steps trained."""
    steps = []
    train_step = EpochLoop.train_step

    def step(self, batch):
        steps.append(1)
        for number in at.get(len(steps), []):
            os.kill(os.getpid(), number)
        return train_step(self, batch)

    monkeypatch.setattr(EpochLoop, "train_step", step)
    return steps


STOP_ARGS = ["train", "vit-2", "--epochs", "2", "--batch-size", "32", "--limit-train-batches", "8",
             "--limit-eval-batches", "2", "--no-progress", "--checkpoint-minutes", "0"]


@pytest.mark.parametrize(("at_step", "checkpoint_at", "steps_left"), [(13, (1, 5), 3), (8, (1, None), 8)],
                         ids=["inside-an-epoch", "at-an-epochs-last-step"])
def test_a_stop_signal_loses_no_training_and_resume_gives_the_uninterrupted_metrics(
        tmp_path, monkeypatch, at_step, checkpoint_at, steps_left):
    """SIGTERM during step 13 (epoch 2, step 5 of 8): that step ends, is saved, the run stops; during step 8 (the
    last of epoch 1): the epoch ends as usual (evaluation, checkpoint), then the run stops. Either way --resume
    trains only the steps left, to the numbers of a run never stopped, and the signal handlers are put back."""
    noisy_steps(monkeypatch)
    assert cli(tmp_path / "straight", *STOP_ARGS) == 0
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    steps = signals_at_steps(monkeypatch, {at_step: [signal.SIGTERM]})
    stopped = RunDir(tmp_path / "stopped" / "vit-2")
    assert cli(tmp_path / "stopped", *STOP_ARGS) == 130
    assert len(steps) == at_step  # no step after the signal's
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    checkpoint = torch.load(stopped.last_checkpoint, weights_only=True)
    assert (checkpoint["epoch"], checkpoint.get("partial", {}).get("steps")) == checkpoint_at
    assert len(stopped.read_metrics()) == 1 and "SIGTERM" in stopped.read_summary()["reason"]

    steps = signals_at_steps(monkeypatch, {})
    assert cli(tmp_path / "stopped", *STOP_ARGS, "--resume") == 0
    assert len(steps) == steps_left  # nothing trained twice
    assert scores(stopped.read_metrics()) == expected
    assert stopped.read_summary()["status"] == "completed"
    assert stopped.read_summary()["test_final"] == RunDir(tmp_path / "straight" / "vit-2").read_summary()["test_final"]


def test_a_second_signal_stops_at_once_but_one_delivered_twice_does_not(tmp_path, monkeypatch, python_ctrl_c):
    """Ctrl-C, then Ctrl-C again a second later: the run stops inside the step, as a plain Ctrl-C would, with the
    last checkpoint (here epoch 1's) kept. The same signal twice in a row (a terminal's Ctrl-C reaching torchrun's
    workers directly and through torchrun) is one request: the run stops after that step, with a checkpoint."""
    monkeypatch.setattr(StopSignals, "SAME_REQUEST_SECONDS", 0.0)
    steps = signals_at_steps(monkeypatch, {11: [signal.SIGINT, signal.SIGINT]})
    run = RunDir(tmp_path / "twice" / "vit-2")
    assert cli(tmp_path / "twice", *STOP_ARGS) == 130
    assert run.read_summary()["reason"].startswith("stopped at once by a second SIGINT; continue with --resume")
    assert len(steps) == 11 and "partial" not in torch.load(run.last_checkpoint, weights_only=True)

    monkeypatch.setattr(StopSignals, "SAME_REQUEST_SECONDS", 60.0)
    steps = signals_at_steps(monkeypatch, {11: [signal.SIGINT, signal.SIGINT]})
    run = RunDir(tmp_path / "once" / "vit-2")
    assert cli(tmp_path / "once", *STOP_ARGS) == 130
    assert "stopped by SIGINT at epoch 2, step 3 of 8" in run.read_summary()["reason"]
    assert torch.load(run.last_checkpoint, weights_only=True)["partial"]["steps"] == 3


def test_resume_inside_an_epoch_gives_the_uninterrupted_metrics(tmp_path, monkeypatch):
    """Checkpoints inside an epoch (here after every step): a run stopped in the middle of epoch 2 continues from
    its last step, trains only the steps left, and ends with the numbers of a run never stopped."""
    args = ["train", "vit-2", "--epochs", "2", "--batch-size", "32", "--limit-train-batches", "8",
            "--limit-eval-batches", "2", "--no-progress", "--checkpoint-minutes", "1e-9"]
    noisy_steps(monkeypatch)
    assert cli(tmp_path / "straight", *args) == 0
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    steps = []
    train_step = EpochLoop.train_step

    def stopped_at_step_13(self, batch):  # epoch 2, step 5
        steps.append(1)
        if len(steps) == 13:
            raise KeyboardInterrupt
        return train_step(self, batch)

    monkeypatch.setattr(EpochLoop, "train_step", stopped_at_step_13)
    stopped = RunDir(tmp_path / "stopped" / "vit-2")
    assert cli(tmp_path / "stopped", *args) == 130
    checkpoint = torch.load(stopped.last_checkpoint, weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["partial"]["epoch"] == 2 and checkpoint["partial"]["steps"] == 4
    assert checkpoint["partial"]["totals"]["items"] == 4 * 32
    assert len(stopped.read_metrics()) == 1

    steps.clear()
    monkeypatch.setattr(EpochLoop, "train_step", lambda self, batch: steps.append(1) or train_step(self, batch))
    assert cli(tmp_path / "stopped", *args, "--resume") == 0
    assert len(steps) == 4  # the 4 steps of epoch 2 left, nothing trained twice
    config = stopped.read_config()
    first, second = config["attempts"]
    assert (first["from_epoch"], first["from_step"], second["from_epoch"], second["from_step"]) == (1, 0, 2, 4)
    assert config["started"] == first["started"] <= second["started"]
    assert second["git_commit"] == config["environment"]["git_commit"] and second["device"] == "cpu"
    assert scores(stopped.read_metrics()) == expected
    assert stopped.read_summary()["status"] == "completed"
    assert stopped.read_summary()["test_final"] == RunDir(tmp_path / "straight" / "vit-2").read_summary()["test_final"]


def test_no_checkpoint_inside_an_epoch_with_checkpoint_minutes_0(tmp_path, monkeypatch):
    saved = []
    save = RunDir.save_checkpoints
    monkeypatch.setattr(RunDir, "save_checkpoints",
                        lambda self, state, best=None: saved.append(state) or save(self, state, best))
    args = ["train", "vit-2", "--epochs", "2", *TINY_VIT]
    assert cli(tmp_path / "none", *args, "--checkpoint-minutes", "0") == 0
    assert [s["epoch"] for s in saved] == [1, 2] and not any("partial" in s for s in saved)
    saved.clear()
    assert cli(tmp_path / "every-step", *args, "--checkpoint-minutes", "1e-9") == 0
    # 3 steps per epoch, a checkpoint after steps 1 and 2 (the last step's is the epoch's own)
    assert [(s["epoch"], s.get("partial", {}).get("steps")) for s in saved] == [(0, 1), (0, 2), (1, None), (1, 1),
                                                                                (1, 2), (2, None)]


def test_non_finite_loss_stops_the_run_as_diverged(tmp_path, capsys):
    code = cli(tmp_path, "train", "vit-3", "--epochs", "3", "--lr", "1e12", "--batch-size", "32",
               "--limit-train-batches", "20", "--limit-eval-batches", "1", "--no-progress")
    assert code == 1
    summary = RunDir(tmp_path / "vit-3").read_summary()
    assert summary["status"] == "diverged" and "loss became" in summary["reason"]
    assert "diverged" in capsys.readouterr().out
    assert (tmp_path / "vit-3" / "train.log").exists()


def test_grid_skips_completed_runs(tmp_path, capsys):
    args = ["grid", "vit", "--epochs", "1", "--batch-size", "8", "--limit-train-batches", "1",
            "--limit-eval-batches", "1", "--no-progress"]
    assert cli(tmp_path, *args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"vit-{i}" for i in range(1, 8)]
    configs = {i: RunDir(tmp_path / f"vit-{i}").read_config()["experiment"] for i in (3, 4, 7)}
    assert configs[3]["optimizer"] == "sgd" and configs[4]["momentum"] == 0.9 and configs[7]["block"] == "postnorm"
    capsys.readouterr()
    assert cli(tmp_path, *args) == 0
    assert capsys.readouterr().out.count("completed already, skipped") == 7


def _torchrun(out: Path, nproc: int, *argv: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "replab", *argv, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    args = ["train", "vit-2", "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "3",
            "--limit-eval-batches", "2", "--no-progress", "--device", "cpu"]
    single = _torchrun(tmp_path / "one", 1, *args)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _torchrun(tmp_path / "two", 2, *args)
    assert double.returncode == 0, double.stderr[-3000:]
    one = RunDir(tmp_path / "one" / "vit-2")
    two = RunDir(tmp_path / "two" / "vit-2")
    assert two.read_config()["world_size"] == 2
    for a, b in zip(scores(one.read_metrics()), scores(two.read_metrics()), strict=True):
        assert_scores_close(a, b, rel_tol=1e-4, abs_tol=1e-5)
    # only rank 0 writes: one metrics line per epoch, and one console: each line once, one closing line
    assert len(two.metrics.read_text().splitlines()) == 2
    assert json.loads(two.summary.read_text())["status"] == "completed"
    assert double.stdout.count("vit-2: completed") == 1 and double.stdout.strip() == single.stdout.strip()
    assert double.stderr.count("epoch 1: train loss") == 1 and double.stderr.count("epoch 2: train loss") == 1
    for result in (single, double):  # the closing line once, on standard output, not also in the log
        assert "vit-2: completed" not in result.stderr and "vit-2 completed" not in result.stderr
    assert "rank 1" not in double.stderr  # rank 1 had nothing to warn about


def test_under_ddp_other_ranks_write_only_warnings_and_errors_prefixed_with_their_rank(capsys):
    """The console handler of rank 1: its info lines are dropped, its warnings carry ``rank 1:``; its standard
    output is discarded; rank 0's console is the plain one."""
    import logging

    from replab.console import configure_logging, error_line, main_process_output

    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        for rank, expected in ((1, "rank 1: WARNING: disk nearly full\n"), (0, "an epoch line\ndisk nearly full\n")):
            root.handlers.clear()
            configure_logging(rank=rank)
            logging.getLogger("replab.test").info("an epoch line")
            logging.getLogger("replab.test").warning("disk nearly full")
            with main_process_output(rank=rank):
                print("vit-2: completed")
            captured = capsys.readouterr()
            assert captured.err == expected and captured.out == ("vit-2: completed\n" if rank == 0 else "")
    finally:
        root.handlers[:] = saved
    assert error_line("bad", rank=1) == "rank 1: replab: error: bad" and error_line("bad", rank=0).startswith("replab")


@pytest.mark.slow
def test_ddp_checkpoint_inside_an_epoch_holds_every_ranks_sums_and_resumes(tmp_path):
    args = ["train", "vit-2", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "3",
            "--limit-eval-batches", "2", "--no-progress", "--device", "cpu", "--checkpoint-minutes", "1e-9",
            "--keep-checkpoints"]
    straight = _torchrun(tmp_path, 2, *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = RunDir(tmp_path / "vit-2")
    expected = scores(run.read_metrics())
    # checkpoints after steps 1 and 2, then the epoch's own: previous.pt is the one after step 2
    partial = torch.load(run.previous_checkpoint, weights_only=True)["partial"]
    assert partial["epoch"] == 1 and partial["steps"] == 2
    assert partial["totals"]["items"] == 2 * 16  # the images of both ranks (8 each per step)
    run.previous_checkpoint.replace(run.last_checkpoint)  # back to that moment
    run.summary.unlink()
    resumed = _torchrun(tmp_path, 2, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming inside epoch 1, after step 2" in run.log.read_text()
    (got,), (want,) = scores(run.read_metrics()), expected
    assert_scores_close(got, want, rel_tol=1e-6, abs_tol=1e-7)


@pytest.mark.slow
def test_ddp_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path):
    """torchrun passes SIGTERM on to its workers; they agree on the step to stop after (the first at which any has
    the signal), rank 0 saves it, and a resumed run ends with the numbers of one never stopped."""
    args = ["train", "vit-2", "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "30",
            "--limit-eval-batches", "2", "--no-progress", "--device", "cpu", "--checkpoint-minutes", "0"]
    straight = _torchrun(tmp_path / "straight", 2, *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = RunDir(tmp_path / "stopped" / "vit-2")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "replab", *args, "--out", str(tmp_path / "stopped")]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    wait_for_first_epoch(run, process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    summary = run.read_summary()
    assert summary is not None and summary["status"] == "interrupted" and "SIGTERM" in summary["reason"], output
    partial = torch.load(run.last_checkpoint, weights_only=True)["partial"]
    assert partial["epoch"] == 2 and 1 <= partial["steps"] < 30
    assert partial["totals"]["items"] == partial["steps"] * 16  # both ranks' images, up to the same step
    resumed = _torchrun(tmp_path / "stopped", 2, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for got, want in zip(scores(run.read_metrics()), scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics()),
                         strict=True):
        assert_scores_close(got, want, rel_tol=1e-6, abs_tol=1e-7)


def test_batchnorm_is_synchronised_only_for_ddp_on_gpus():
    from replab.models.cnn import build_cnn
    from replab.train import sync_batchnorm

    def kinds(model):
        return {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    assert kinds(sync_batchnorm(build_cnn("resnet"), torch.device("cuda", 0), True)) == {"SyncBatchNorm"}
    for device, distributed in ((torch.device("cuda", 0), False), (torch.device("cpu"), True)):
        assert kinds(sync_batchnorm(build_cnn("resnet"), device, distributed)) == {"BatchNorm2d"}
