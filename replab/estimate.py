"""What a run will cost, measured before it starts (``--dry-run``): a few real training steps, timed.

``estimate_run(experiment, settings)`` builds the task, model and optimizer exactly as the trainer does
(``Trainer.setup``), runs warm-up steps, then times real training steps (``EpochLoop.train_step``: forward,
backward, optimizer step, with the batch's preparation and augmentation) and evaluation batches
(``EpochLoop.eval_step``), and extrapolates with the median step times:

    per epoch = training batches × training step + validation batches × evaluation step
    total     = per epoch × epochs still to train + 2 × test batches × evaluation step  (test of last and best model)

Batch limits, ``--epochs`` and the epochs a resumed run has already done are respected, so the 10-epoch CNN grid
costs 10/180 of the 180-epoch one. Peak memory is measured during the timed steps (CPU: resident memory of the
process, ``replab.system``; CUDA: ``torch.cuda.max_memory_allocated``). Nothing is written: no run folder, no
configuration, no checkpoint. The clock is a parameter, so the arithmetic is testable with a fake one.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from replab.experiments import Experiment, RunSettings
from replab.loop import epoch_seed
from replab.system import MemoryMonitor, release_free_memory, synchronize
from replab.train import Trainer

Clock = Callable[[], float]


@dataclass(frozen=True)
class Sampling:
    """How many steps are timed: ``warmup`` untimed, then ``steps`` timed ones, or fewer (at least ``min_steps``)
    once the timed ones took ``budget_seconds`` (a CPU LSTM step takes seconds); likewise for evaluation."""

    warmup: int = 3
    steps: int = 10
    min_steps: int = 5
    budget_seconds: float = 15.0
    eval_warmup: int = 1
    eval_steps: int = 5


@dataclass(frozen=True)
class Estimate:
    """The measured step times of one run and what they extrapolate to (seconds, MiB)."""

    id: str
    device: str
    step_seconds: float  # median training step (batch preparation included)
    eval_step_seconds: float  # median evaluation batch
    train_batches: int  # per epoch
    eval_batches: int  # validation batches per epoch
    test_batches: int  # per test evaluation (two at the end: last and best model)
    epochs: int  # still to train
    epochs_done: int = 0
    peak_mb: float | None = None
    memory_source: str = ""
    steps_timed: int = 0

    @property
    def epoch_seconds(self) -> float:
        return self.train_batches * self.step_seconds + self.eval_batches * self.eval_step_seconds

    @property
    def test_seconds(self) -> float:
        return 2 * self.test_batches * self.eval_step_seconds if self.epochs else 0.0

    @property
    def total_seconds(self) -> float:
        return self.epochs * self.epoch_seconds + self.test_seconds


def skipped(experiment: Experiment) -> Estimate:
    """A run that completed its epochs already: it costs nothing."""
    return Estimate(experiment.id, "-", 0.0, 0.0, 0, 0, 0, epochs=0, epochs_done=experiment.epochs)


def _capped(count: int, limit: int | None) -> int:
    return min(count, limit) if limit else count


def _timed(batches: Iterator, step: Callable, warmup: int, steps: int, min_steps: int, budget: float, clock: Clock,
           device: torch.device, monitor: MemoryMonitor | None = None) -> list[float]:
    """Seconds of each timed call of ``step(next(batches))``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(next(batches))
    synchronize(device)
    if monitor is not None:
        monitor.steady()
    times: list[float] = []
    while len(times) < steps and (len(times) < min_steps or sum(times) < budget):
        start = clock()
        step(next(batches))
        synchronize(device)
        times.append(clock() - start)
        if monitor is not None:
            monitor.sample()
    return times


def _endless(make: Callable[[int], Iterator]) -> Iterator:
    """The batches of epoch 0, 1, 2, ... one after another (a short epoch does not end the timing)."""
    return itertools.chain.from_iterable(make(epoch) for epoch in itertools.count())


def estimate_run(experiment: Experiment, settings: RunSettings, epochs_done: int = 0, sampling: Sampling = Sampling(),
                 clock: Clock = time.perf_counter) -> Estimate:
    """Time real steps of ``experiment`` under ``settings`` and extrapolate (see the module). Writes nothing.

    Raises ``RunError`` (missing data, bad device or amp) as the trainer would.
    """
    # The run folder is not checked (an existing run does not stop an estimate) and never touched.
    trainer = Trainer(experiment, dataclasses.replace(settings, resume=False, overwrite=True, progress=False))
    trainer.setup()
    e, task, device = trainer.experiment, trainer.task, trainer.device
    release_free_memory(device)
    s = sampling
    with MemoryMonitor(device, interval=0.05) as monitor:
        trainer.model.train()

        def train_batches(epoch: int) -> Iterator:
            return task.train_batches(torch.Generator().manual_seed(epoch_seed(e.seed, epoch + 1)))

        train_times = _timed(_endless(train_batches), trainer.loop.train_step, s.warmup, s.steps, s.min_steps,
                             s.budget_seconds, clock, device, monitor)
        memory = monitor.epoch_report()
        trainer.model.eval()
        with torch.no_grad():
            eval_times = _timed(_endless(lambda _: task.eval_batches("valid")), trainer.loop.eval_step, s.eval_warmup,
                                s.eval_steps, min(s.min_steps, s.eval_steps), s.budget_seconds, clock, device)
    peak = memory.get("max_allocated_mb") if device.type == "cuda" else memory.get("peak_mb")
    limit_eval = settings.limit_eval_batches
    return Estimate(
        id=e.id, device=str(device),
        step_seconds=statistics.median(train_times), eval_step_seconds=statistics.median(eval_times),
        train_batches=_capped(task.num_train_batches(), settings.limit_train_batches),
        eval_batches=_capped(task.num_eval_batches("valid"), limit_eval),
        test_batches=_capped(task.num_eval_batches("test"), limit_eval),
        epochs=max(e.epochs - epochs_done, 0), epochs_done=epochs_done,
        peak_mb=peak, memory_source="max_allocated" if device.type == "cuda" else memory["source"],
        steps_timed=len(train_times),
    )


# ------------------------------------------------------------------------------------------------ printing
def fmt_duration(seconds: float) -> str:
    """``45 s``, ``12 min 05 s``, ``3 h 07 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def load_note() -> str:
    """The CPU threads PyTorch uses and the machine's load, which an estimate depends on."""
    try:
        load = f", load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    except OSError:
        load = ""
    return f"{torch.get_num_threads()} PyTorch threads{load}"


def table(estimates: list[Estimate]) -> str:
    """One line per run and the grand total."""
    header = (f"{'id':<18}{'s/step':>8}{'s/eval':>8}{'batches':>10}{'est. s/epoch':>14}{'epochs':>8}"
              f"{'est. total':>16}{'est. peak MiB':>15}")
    lines = [header]
    for x in estimates:
        if x.epochs == 0:
            lines.append(f"{x.id:<18}{'completed already: skipped':>60}{'0 s':>16}")
            continue
        peak = f"{x.peak_mb:,.0f}" if x.peak_mb is not None and math.isfinite(x.peak_mb) else "—"
        epochs = f"{x.epochs}" + (f" (+{x.epochs_done} done)" if x.epochs_done else "")
        lines.append(f"{x.id:<18}{x.step_seconds:>8.3f}{x.eval_step_seconds:>8.3f}"
                     f"{f'{x.train_batches}+{x.eval_batches}':>10}{x.epoch_seconds:>14.1f}{epochs:>8}"
                     f"{fmt_duration(x.total_seconds):>16}{peak:>15}")
    total = sum(x.total_seconds for x in estimates)
    lines.append(f"{'total':<18}{'':>56}{fmt_duration(total):>20}")
    return "\n".join(lines)


def precision_table(fp32: list[Estimate], bf16: list[Estimate]) -> str:
    """The same runs estimated in fp32 and with ``--amp bf16``, side by side: seconds per epoch, totals, and how
    many times faster bf16 is."""
    header = (f"{'id':<18}{'fp32 s/epoch':>14}{'bf16 s/epoch':>14}{'fp32 total':>16}{'bf16 total':>16}"
              f"{'bf16 speed-up':>15}")
    lines = [header]
    for a, b in zip(fp32, bf16, strict=True):
        if a.epochs == 0:
            lines.append(f"{a.id:<18}{'completed already: skipped':>60}")
            continue
        lines.append(f"{a.id:<18}{a.epoch_seconds:>14.1f}{b.epoch_seconds:>14.1f}{fmt_duration(a.total_seconds):>16}"
                     f"{fmt_duration(b.total_seconds):>16}{_speedup(a.total_seconds, b.total_seconds):>15}")
    a, b = total_seconds(fp32), total_seconds(bf16)
    lines.append(f"{'total':<18}{'':>28}{fmt_duration(a):>16}{fmt_duration(b):>16}{_speedup(a, b):>15}")
    return "\n".join(lines)


def _speedup(fp32_seconds: float, bf16_seconds: float) -> str:
    return f"{fp32_seconds / bf16_seconds:.2f}x" if bf16_seconds > 0 else "-"


def total_seconds(estimates: list[Estimate]) -> float:
    return sum(x.total_seconds for x in estimates)
