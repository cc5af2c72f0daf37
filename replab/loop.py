"""One pass over the data: an epoch of training steps (their statistics, the checkpoints inside it, stop signals)
and an evaluation, on the one batch loop both share.

``replab.train.Trainer`` builds an ``EpochLoop`` around the task, the model and the optimizer of a run, and calls
``train_epoch`` and ``evaluate`` once per epoch; ``replab.estimate`` times its ``train_step`` and ``eval_step``.
At the start of epoch ``e`` the global RNG (dropout) and the data generator (shuffling, augmentation) are re-seeded
from ``(seed, e)`` (``epoch_seed``), so a resumed run continues with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from replab.checkpoints import continue_epoch
from replab.experiments import Experiment, RunSettings
from replab.progress import EpochBar
from replab.system import Distributed, MemoryMonitor, StopSignals, Stopwatch
from replab.tasks import Task


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Stopped(Exception):
    """A stop signal (``StopSignals``) was honoured at a safe point, after saving a checkpoint there."""


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63)


class EpochLoop:
    """The epochs' mechanics for one run: ``objective`` is what a step calls (the model, or its DDP or compiled
    wrapper), ``model`` the module itself (train/eval mode); ``stop_signals`` are installed by the trainer; under DDP
    (``dist``) every rank runs the same steps and the statistics are summed over ranks."""

    def __init__(self, experiment: Experiment, settings: RunSettings, task: Task, model: nn.Module,
                 objective: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 device: torch.device, dist: Distributed, stop_signals: StopSignals, progress: bool):
        self.experiment, self.settings, self.task = experiment, settings, task
        self.model, self.objective, self.optimizer, self.scaler = model, objective, optimizer, scaler
        self.device, self.dist, self.stop_signals, self.progress = device, dist, stop_signals, progress
        self._save_every: int | None = None  # steps between checkpoints inside an epoch (set after the warm-up)

    def autocast(self):
        if self.settings.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step (forward, backward, optimizer): the batch's loss and summed statistics.

        Raises ``Diverged`` before the update if the loss is not finite. ``replab.estimate`` times this very step.
        """
        with self.autocast():
            loss, stats = self.task.step(self.objective, batch)
        if not torch.isfinite(loss.detach()).item():
            raise Diverged(f"loss became {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, stats

    def eval_step(self, batch) -> dict[str, torch.Tensor]:
        """The summed statistics of one evaluation batch (call under ``torch.no_grad`` with the model in eval mode)."""
        with self.autocast():
            _, stats = self.task.step(self.objective, batch)
        return stats

    def train_epoch(self, epoch: int, monitor: MemoryMonitor, save_partial: Callable,
                    partial: dict | None = None) -> tuple[dict, float, float]:
        """One epoch of training: (scores, training seconds, items). ``save_partial(epoch, steps, totals, seconds)``
        saves a checkpoint inside the epoch (every ``_steps_between_saves`` steps, and at a stop signal);
        ``partial`` (``replab.checkpoints.Resume.partial``) continues the epoch a checkpoint was saved in, after its
        ``steps``."""
        self.model.train()
        seed = epoch_seed(self.experiment.seed, epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        batches = self.task.train_batches(generator, self.dist.rank, self.dist.world_size)
        total = self.task.num_train_batches()
        if self.settings.limit_train_batches:
            total = min(total, self.settings.limit_train_batches)
        done, totals, earlier_seconds = 0, {}, 0.0
        if partial is not None:
            done, totals, earlier_seconds = continue_epoch(partial, batches, self.device, self.dist.is_main)
        warmup = max(1, min(20, (total - done) // 5))
        bar = EpochBar(total, done, f"{self.experiment.id} epoch {epoch}", self.task.unit, self.progress,
                       float(totals["items"]) if totals else 0.0, self.dist.world_size)
        clock = Stopwatch(self.device)

        def step(index: int, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            try:
                return self.train_step(batch)
            except Diverged as error:
                raise Diverged(f"{error} at epoch {epoch}, step {index + 1}") from None

        def after(index: int, loss: torch.Tensor, totals: dict[str, torch.Tensor]) -> None:
            if index + 1 - done == warmup:
                monitor.steady()
                if self._save_every is None:
                    self._save_every = self._steps_between_saves(clock.elapsed() / warmup)
            steps = index + 1
            if steps < total:  # (after an epoch's last step, the epoch's own checkpoint and stop check follow)
                stop = self.stop_requested()
                if stop or (self._save_every and steps % self._save_every == 0):
                    save_partial(epoch, steps, totals, earlier_seconds + clock.elapsed())
                if stop:
                    raise Stopped(f"stopped by {self.stop_signal()} at epoch {epoch}, step {steps} of {total}, "
                                  "with a checkpoint there")
            if self.progress:
                bar.update(loss.item(), totals["items"].item(), clock.elapsed())

        totals = self._batch_loop(batches, total, step, after, start=done, totals=totals)
        bar.close()
        seconds = earlier_seconds + clock.elapsed()
        summed = self.dist.sum(totals)
        return self.task.scores(summed), seconds, summed["items"]

    def stop_requested(self) -> bool:
        """Whether a stop signal reached any rank (collective under DDP: every rank asks at the same step)."""
        return self.dist.any(self.stop_signals.received is not None, self.device)

    def stop_signal(self) -> str:
        return self.stop_signals.received or "a signal to another rank"

    def _steps_between_saves(self, step_seconds: float) -> int:
        """Training steps in ``settings.checkpoint_minutes`` at ``step_seconds`` per step (0: no saves inside an
        epoch); every rank gets the same number (their mean), as the save is collective."""
        if not self.settings.checkpoint_minutes:
            return 0
        steps = max(1.0, self.settings.checkpoint_minutes * 60 / max(step_seconds, 1e-9))
        mean = self.dist.sum({"steps": torch.tensor(steps, device=self.device)})["steps"] / self.dist.world_size
        return max(1, int(mean))

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """The scores (``loss`` and the task's metric) of the model on ``split`` (``valid`` or ``test``), at most
        ``--limit-eval-batches`` batches, summed over ranks."""
        self.model.eval()
        batches = self.task.eval_batches(split, self.dist.rank, self.dist.world_size)
        limit = self.settings.limit_eval_batches
        totals = self._batch_loop(batches, limit, lambda _, batch: (None, self.eval_step(batch)))
        return self.task.scores(self.dist.sum(totals))

    @staticmethod
    def _batch_loop(batches, limit: int | None, step, after=None, start: int = 0,
                    totals: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The one batch loop (training and evaluation): ``step(index, batch) -> (loss, statistics)`` on at most
        ``limit`` batches (None or 0: all), the statistics summed; ``after(index, loss, totals)`` after each.
        ``start``: the index of the first batch of ``batches`` (an epoch continued), ``totals`` its sums so far."""
        totals = dict(totals or {})
        for index, batch in enumerate(batches, start=start):
            if limit and index >= limit:
                break
            loss, stats = step(index, batch)
            for k, v in stats.items():
                totals[k] = totals[k] + v if k in totals else v
            if after is not None:
                after(index, loss, totals)
        return totals
