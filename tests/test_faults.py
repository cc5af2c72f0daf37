"""Faults and hostile input: unsafe and damaged checkpoints, one writer per run folder, a full disk, damaged data,
damaged run files in a report, and SIGKILL at random moments of a run (training, evaluation, checkpoint writes)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from replab.checkpoints import CheckpointError, load_checkpoint
from replab.cli import main
from replab.runlog import RunDir, RunLock
from tests.report.fakes import write_run
from tests.test_train import run_in_fresh_process, scores

TINY = ["--batch-size", "32", "--limit-train-batches", "3", "--limit-eval-batches", "2", "--no-progress"]


def cli(out: Path, *argv: str) -> int:
    return main([*argv, "--out", str(out)])


@pytest.fixture(autouse=True)
def _data(data_root, monkeypatch):
    monkeypatch.setenv("REPLAB_DATA", str(data_root))


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------------------------- unsafe checkpoints
class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: code run by merely loading a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_with_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, capsys):
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", "--keep-checkpoints", *TINY) == 0
    run = RunDir(tmp_path / "vit-2")
    marker = tmp_path / "pwned"
    state = load_checkpoint(run.last_checkpoint)
    torch.save({**state, "model": _Payload(marker)}, run.last_checkpoint)

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run.last_checkpoint)
    assert info.value.unsafe and not marker.exists()
    capsys.readouterr()
    assert cli(tmp_path, "train", "vit-2", "--epochs", "2", "--resume", *TINY) == 2
    message = one_line(capsys.readouterr().err)
    assert "last.pt" in message and "refused" in message
    assert not marker.exists()
    assert len(run.read_metrics()) == 1  # the run is left as it was

    torch.load(run.last_checkpoint, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()


# ------------------------------------------------------------------------------------ damaged checkpoints
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    assert cli(tmp_path / "straight", "train", "vit-2", "--epochs", "3", *TINY) == 0
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    assert cli(tmp_path / "damaged", "train", "vit-2", "--epochs", "2", "--keep-checkpoints", *TINY) == 0
    run = RunDir(tmp_path / "damaged" / "vit-2")
    assert load_checkpoint(run.previous_checkpoint)["epoch"] == 1 and load_checkpoint(run.last_checkpoint)["epoch"] == 2
    size = run.last_checkpoint.stat().st_size
    os.truncate(run.last_checkpoint, size // 2)  # a full disk or a copy cut short
    caplog.clear()
    assert cli(tmp_path / "damaged", "train", "vit-2", "--epochs", "3", "--resume", *TINY) == 0
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "last.pt" in warnings and "previous.pt, epoch 1" in warnings
    assert scores(run.read_metrics()) == expected  # epoch 2 retrained from epoch 1's state, epoch 3 after it
    assert run.read_summary()["status"] == "completed"


def test_no_readable_checkpoint_is_a_one_line_error_with_exit_2(tmp_path, capsys):
    assert cli(tmp_path, "train", "vit-2", "--epochs", "2", "--keep-checkpoints", *TINY) == 0
    run = RunDir(tmp_path / "vit-2")
    run.last_checkpoint.write_bytes(b"\x00" * 100)
    os.truncate(run.previous_checkpoint, 10)
    before = run.metrics.read_bytes()
    capsys.readouterr()
    assert cli(tmp_path, "train", "vit-2", "--epochs", "3", "--resume", *TINY) == 2
    message = one_line(capsys.readouterr().err)
    assert "no readable checkpoint" in message and "--overwrite" in message
    assert "last.pt" in message and "previous.pt" in message
    assert run.metrics.read_bytes() == before
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", "--overwrite", *TINY) == 0


# --------------------------------------------------------------------------------- one writer per folder
LOCK_HOLDER = """
import sys, time
from replab.runlog import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_process_on_a_run_folder_exits_2_naming_the_holder_and_a_dead_holder_never_blocks(tmp_path, capsys):
    folder = tmp_path / "vit-2"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        started = time.monotonic()
        assert cli(tmp_path, "train", "vit-2", "--epochs", "1", *TINY) == 2
        message = one_line(capsys.readouterr().err)
        assert f"pid {holder.pid}" in message and "another process" in message
        assert time.monotonic() - started < 60  # at once: no data loaded, no waiting for the holder
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written beside the holder's lock
    finally:
        holder.kill()
        holder.wait()
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", *TINY) == 0  # the dead holder's lock is gone
    assert RunDir(folder).read_summary()["status"] == "completed"


def test_the_lock_is_held_for_the_whole_run_and_released_after(tmp_path, monkeypatch):
    from replab.train import Trainer

    seen = []
    fit = Trainer.fit

    def fit_while_probing(self):
        probe = RunLock(self.run.path)
        try:
            probe.acquire()
            seen.append("free")
            probe.release()
        except Exception as error:  # noqa: BLE001 - the probe records what it met
            seen.append(type(error).__name__)
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", fit_while_probing)
    assert cli(tmp_path, "train", "vit-2", "--epochs", "1", *TINY) == 0
    assert seen == ["RunLocked"]
    probe = RunLock(tmp_path / "vit-2")
    probe.acquire()  # released when the run ended
    probe.release()


def test_bad_input_after_the_lock_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLAB_DATA", str(tmp_path / "no-data"))
    assert cli(tmp_path / "runs", "train", "vit-2", "--epochs", "1", *TINY) == 2
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ full disk
def test_a_full_disk_ends_the_run_as_failed_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    assert cli(tmp_path / "straight", "train", "vit-2", "--epochs", "3", *TINY) == 0
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    saves = []
    real_save = torch.save

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) > 2:  # epoch 1 writes best.pt and last.pt; epoch 2's first write fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    capsys.readouterr()
    assert cli(tmp_path, "train", "vit-2", "--epochs", "3", *TINY) == 1
    out = capsys.readouterr().out
    assert "failed" in one_line(out) and "No space left on device" in out
    run = RunDir(tmp_path / "vit-2")
    summary = run.read_summary()
    assert summary["status"] == "failed" and "No space left on device" in summary["reason"]
    assert load_checkpoint(run.last_checkpoint)["epoch"] == 1
    assert not list(run.path.glob(".*.tmp"))  # no half-written checkpoint left behind
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]  # epoch 2's line is complete; its checkpoint is not

    monkeypatch.setattr(torch, "save", real_save)
    assert cli(tmp_path, "train", "vit-2", "--epochs", "3", "--resume", *TINY) == 0
    assert scores(run.read_metrics()) == expected


def test_a_failed_metrics_write_is_cut_off_and_fails_the_run(tmp_path, monkeypatch):
    import replab.runlog as runlog

    syncs = []
    real_fsync = os.fsync

    def fsync_until_the_disk_is_full(fd):
        syncs.append(1)
        if len(syncs) == 5:  # config.json; epoch 1: metrics, best.pt, last.pt; epoch 2: the metrics line
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(runlog.os, "fsync", fsync_until_the_disk_is_full)
    assert cli(tmp_path, "train", "vit-2", "--epochs", "3", *TINY) == 1
    run = RunDir(tmp_path / "vit-2")
    text = run.metrics.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1  # the torn line was cut off again
    assert run.read_summary()["status"] == "failed"
    assert load_checkpoint(run.last_checkpoint)["epoch"] == 1


def test_an_unwritable_output_folder_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert cli(blocker, "train", "vit-2", "--epochs", "1", *TINY) == 2
    assert "cannot create the run folder" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------ damaged data
def data_copy(data_root: Path, destination: Path, damaged: str) -> Path:
    """A data folder of links to the real files, with a private copy of the one file ``damaged`` to damage."""
    for source in data_root.rglob("*"):
        if source.is_dir():
            continue
        target = destination / source.relative_to(data_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.name == damaged:
            shutil.copyfile(source, target)
        else:
            target.symlink_to(source.resolve())
    return next(destination.rglob(damaged))


def flip_bytes(path: Path, every: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1000, len(data) - 1000, every):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_cifar_batch_is_a_one_line_error_naming_the_file(tmp_path, data_root, capsys, damage):
    path = data_copy(data_root, tmp_path / "data", "data_batch_3")
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 3)
    else:
        flip_bytes(path, 1_000_003)  # a few pixels: the pickle still loads; only the checksum tells
    capsys.readouterr()
    assert cli(tmp_path / "runs", "train", "vit-2", "--data-dir", str(tmp_path / "data"), *TINY) == 2
    assert "data_batch_3" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("with_sums", [True, False])
def test_a_damaged_wikitext_file_is_a_one_line_error_naming_the_file(tmp_path, data_root, capsys, with_sums):
    path = data_copy(data_root, tmp_path / "data", "wiki.train.npz")
    flip_bytes(path, 997)
    if not with_sums:
        (path.parent / "MD5SUMS").unlink()  # then the archive's own damage is what is caught
    capsys.readouterr()
    assert cli(tmp_path / "runs", "train", "lstm-1", "--data-dir", str(tmp_path / "data"), *TINY) == 2
    assert "wiki.train.npz" in one_line(capsys.readouterr().err)
    assert main(["data", "check", "--data-dir", str(tmp_path / "data")]) == 2
    assert "DAMAGED" in capsys.readouterr().out


def test_data_check_verify_compares_with_the_official_sums_and_names_the_damaged_file(tmp_path, data_root, capsys):
    capsys.readouterr()
    assert main(["data", "check", "--verify", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    # the shared copy is a re-encoding: not the official files, but every one matches its own MD5SUMS
    assert out.count("differs from the official release; matches") == 7 and "DAMAGED" not in out

    path = data_copy(data_root, tmp_path / "data", "test_batch")
    flip_bytes(path, 1_000_003)
    assert main(["data", "check", "--verify", "--data-dir", str(tmp_path / "data")]) == 2
    damaged = [line for line in capsys.readouterr().out.splitlines() if "DAMAGED" in line]
    assert len(damaged) == 2 and all("test_batch" in line for line in damaged)  # the load and the verify line


# ------------------------------------------------------------------------------- damaged files in a report
def test_report_marks_runs_with_damaged_files_and_never_crashes(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "vit-1", [0.40, 0.45], [0.42, 0.50])
    write_run(runs, "vit-2", [0.41, 0.47], [0.43, 0.52]).summary.write_bytes(b"\x00\xff\xfe garbage")
    metrics = write_run(runs, "vit-3", [0.30, 0.35, 0.37], [0.31, 0.36, 0.40]).metrics
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    write_run(runs, "vit-4", [0.30], [0.31]).config.write_bytes(b"\xff" * 10)

    assert main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    for run_id, problem in (("vit-2", "summary.json damaged"), ("vit-3", "metrics.jsonl damaged at line 2"),
                            ("vit-4", "config.json damaged")):
        row = next(line for line in report.splitlines() if line.startswith(f"| {run_id}") and "damaged" in line)
        assert problem in row, row
    assert (tmp_path / "report" / "report.html").exists()


# --------------------------------------------------------------------------- SIGKILL at random moments
KILLER = r"""
import io, os, signal, sys, threading
phase, count = sys.argv[1], int(sys.argv[2])
import torch
from replab import tasks
calls = []

def due():
    calls.append(1)
    return len(calls) == count

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if phase == "train":  # the count-th optimizer step of this attempt
    step = torch.optim.AdamW.step
    def killing_step(self, *args, **kwargs):
        if due():
            die()
        return step(self, *args, **kwargs)
    torch.optim.AdamW.step = killing_step
elif phase == "eval":  # after the first batch of the count-th evaluation
    batches = tasks.ImageClassificationTask.eval_batches
    def killing_batches(self, *args, **kwargs):
        for index, batch in enumerate(batches(self, *args, **kwargs)):
            if index == 1 and due():
                die()
            yield batch
    tasks.ImageClassificationTask.eval_batches = killing_batches
elif phase == "save":  # halfway through writing the count-th checkpoint
    save = torch.save
    def killing_save(obj, f, *args, **kwargs):
        if due():
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return save(obj, f, *args, **kwargs)
    torch.save = killing_save
elif phase == "rotate":  # between moving last.pt to previous.pt and moving the new one in
    replace = os.replace
    def killing_replace(source, target):
        replace(source, target)
        if str(target).endswith("previous.pt") and due():
            die()
    os.replace = killing_replace
elif phase == "timer":  # count milliseconds after start
    threading.Timer(count / 1000, die).start()

from replab.cli import main
sys.exit(main(sys.argv[3:]))
"""

KILL_ARGS = ["train", "vit-2", "--epochs", "4", "--batch-size", "32", "--limit-train-batches", "4",
             "--limit-eval-batches", "2", "--no-progress"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_reaches_the_uninterrupted_metrics(tmp_path):
    run_in_fresh_process(tmp_path / "straight", *KILL_ARGS)
    expected = scores(RunDir(tmp_path / "straight" / "vit-2").read_metrics())

    rng = random.Random(20261129)
    phases = ["train", "eval", "save", "rotate", "timer"] * 2
    rng.shuffle(phases)
    counts = {"train": lambda: rng.randint(1, 6), "eval": lambda: rng.randint(1, 2),
              "save": lambda: rng.randint(1, 3), "rotate": lambda: 1, "timer": lambda: rng.randint(2000, 9000)}
    run = RunDir(tmp_path / "faulty" / "vit-2")
    killed = []
    for phase in phases:
        resume = ["--resume"] if run.exists() else []
        command = [sys.executable, "-c", KILLER, phase, str(counts[phase]()), *KILL_ARGS, *resume,
                   "--out", str(tmp_path / "faulty")]
        attempt = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert attempt.returncode in (0, -9), attempt.stdout + attempt.stderr
        if attempt.returncode == 0:
            break  # the run finished before this attempt's fault came due
        killed.append(phase)
    assert {"train", "eval", "save", "rotate"} <= set(killed), killed
    # a kill after the summary and before the clean-up leaves last.pt behind: else a completed run keeps best.pt alone
    cleaned_up = attempt.returncode == 0
    if run.read_summary() is None or run.read_summary()["status"] != "completed":
        run_in_fresh_process(tmp_path / "faulty", *KILL_ARGS, "--resume")
        cleaned_up = True
    assert scores(run.read_metrics()) == expected
    assert run.read_summary()["status"] == "completed"
    assert not list(run.path.glob(".*.tmp"))
    assert load_checkpoint(run.best_checkpoint)["epoch"] == run.read_summary()["best_epoch"]
    if cleaned_up:
        assert sorted(p.name for p in run.path.glob("*.pt")) == ["best.pt"]
