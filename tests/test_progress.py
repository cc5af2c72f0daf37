"""The progress bar of an epoch: after a resume, the steps done before show as done, and the rate counts only the
steps this process trained (no timing is measured here: the seconds are given)."""

import io
import signal

import pytest

import replab.loop
from replab.progress import EpochBar
from replab.runlog import RunDir
from tests.test_train import STOP_ARGS, cli, signals_at_steps


def test_a_resumed_epochs_bar_starts_at_the_steps_done_and_rates_only_this_processes_steps():
    # resumed after step 40 of 100, its 40 steps of 32 images counted; then 2 steps of 32 images in 4 s here
    drawn = io.StringIO()
    bar = EpochBar(100, 40, "vit-2 epoch 2", "images", enabled=True, items_done=40 * 32, file=drawn)
    bar.update(2.1, items=41 * 32, seconds=2.0)
    bar.update(2.0, items=42 * 32, seconds=4.0)
    assert bar.bar.n == 42 and bar.bar.format_dict["initial"] == 40
    assert bar.rate(42 * 32, 4.0) == 16.0  # 64 images in 4 s, not 1,344 images in 4 s
    bar.bar.refresh()
    assert "42/100" in drawn.getvalue() and "rate=16 images/s" in drawn.getvalue()
    bar.close()


def test_under_ddp_the_rate_is_every_ranks_images():
    # rank 0 holds the epoch's sums over both ranks so far (64 steps x 16 images), then counts its own 8 per step
    bar = EpochBar(100, 64, "vit-2 epoch 1", "images", enabled=False, items_done=64 * 16, world_size=2)
    assert bar.rate(64 * 16 + 3 * 8, 2.0) == 3 * 16 / 2.0
    bar.update(1.0, 0, 1.0)  # disabled: draws nothing, counts nothing
    assert bar.bar.n == 64


def test_a_bar_without_a_resume_rates_every_step():
    assert EpochBar(10, 0, "lstm-1 epoch 1", "tokens", enabled=False).rate(4 * 4096, 8.0) == 2048.0


@pytest.fixture(autouse=True)
def _data(data_root, monkeypatch):
    monkeypatch.setenv("REPLAB_DATA", str(data_root))


def test_the_trainer_gives_a_resumed_epochs_bar_the_steps_and_items_already_done(tmp_path, monkeypatch):
    """Stopped at epoch 2, step 5 of 8 (batches of 32), then resumed with progress bars: epoch 2's bar starts at 5
    steps and 160 images, and each rate it shows counts the images of the steps trained since."""
    signals_at_steps(monkeypatch, {13: [signal.SIGTERM]})
    assert cli(tmp_path, *STOP_ARGS) == 130
    bars = []

    class RecordingBar(EpochBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})
            self.seen = []
            bars.append(self)

        def update(self, loss, items, seconds):
            self.seen.append(items - self.items_done)
            super().update(loss, items, seconds)

    signals_at_steps(monkeypatch, {})
    monkeypatch.setattr(replab.loop, "EpochBar", RecordingBar)
    assert cli(tmp_path, *[a for a in STOP_ARGS if a != "--no-progress"], "--resume", "--progress") == 0
    (bar,) = bars
    assert (bar.bar.format_dict["initial"], bar.items_done, bar.bar.total) == (5, 5 * 32, 8)
    assert bar.seen == [32, 64, 96] and bar.bar.n == 8
    assert RunDir(tmp_path / "vit-2").read_summary()["status"] == "completed"
