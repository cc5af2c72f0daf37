"""One trainer for every experiment: the loop, evaluation, logs, checkpoints, resume and DDP.

``train(experiment, settings)`` runs one experiment into ``<settings.out>/<experiment.id>/`` and returns its
summary. Task differences (data, loss, score) live in ``replab.tasks``; this module knows none of them.

Reproducibility: the model is initialised from ``seed``; at the start of epoch ``e`` the global RNG (dropout)
and the data generator (shuffling, augmentation) are re-seeded from ``(seed, e)``, so a run resumed from the
checkpoint of epoch ``e - 1`` continues with exactly the numbers of an uninterrupted run on the same device.
Inside an epoch a checkpoint is also saved about every ``settings.checkpoint_minutes`` of training, holding the
steps done and the epoch's statistics so far; resuming from it replays the epoch's batch order up to that step
(the batches are drawn, not trained on), restores the global RNG, and continues with the same numbers too (under
DDP the carried statistics are summed over ranks once, so the epoch's training loss may differ in its last bits).
Ctrl-C or SIGTERM saves such a checkpoint after the step in progress and ends the run as ``interrupted``
(``StopSignals``; under DDP the ranks agree on that step).

Distributed: launched by ``torchrun`` (``WORLD_SIZE > 1``), the model is wrapped in
``DistributedDataParallel``; ``batch_size`` is the *global* batch, split without overlap across ranks, so the
learning rate keeps its meaning whatever the number of processes (on GPUs BatchNorm too normalises over the
global batch: ``SyncBatchNorm``); statistics are summed over ranks; only rank 0 writes files and to the console
(``replab.console``). What a run keeps on disk, and when: ``replab.checkpoints``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from replab.checkpoints import best_state, cannot_train_further, release_training_state, training_state_files
from replab.console import FILE_ONLY, closing_line, epoch_line
from replab.datadir import resolve_data_dir
from replab.experiments import Experiment, RunSettings
from replab.progress import EpochBar
from replab.runlog import CheckpointError, RunDir, RunLock, RunLocked, better, load_checkpoint, memory_summary
from replab.system import (
    Distributed,
    MemoryMonitor,
    StopSignals,
    Stopwatch,
    environment,
    native_bf16_cpu,
    native_bf16_cuda,
    pick_device,
    release_free_memory,
)
from replab.tasks import Task, make_task

log = logging.getLogger("replab.train")

class RunError(Exception):
    """A run cannot start (bad input, missing data, existing run): one line for the user, exit code 2."""


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Stopped(Exception):
    """A stop signal (``StopSignals``) was honoured at a safe point, after saving a checkpoint there."""


class WriteFailed(Exception):
    """The run's files could not be written (full disk, folder gone or read-only): the run ends as ``failed``."""


def build_optimizer(experiment: Experiment, parameters) -> torch.optim.Optimizer:
    """adam: Adam, no weight decay; adamw: AdamW; sgd: SGD without momentum; momentum: SGD with momentum."""
    params = [p for p in parameters if p.requires_grad]
    e = experiment
    if e.optimizer == "adam":
        return torch.optim.Adam(params, lr=e.lr)
    if e.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=e.lr, weight_decay=e.weight_decay)
    if e.optimizer == "sgd":
        return torch.optim.SGD(params, lr=e.lr, weight_decay=e.weight_decay)
    return torch.optim.SGD(params, lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay)


def sync_batchnorm(model: nn.Module, device: torch.device, distributed: bool) -> nn.Module:
    """BatchNorm over the global batch under DDP on GPUs: ``nn.SyncBatchNorm`` (CUDA only in PyTorch).

    On CPU processes (gloo) each rank normalises its own part of the batch, as plain DDP does; the running
    statistics used in evaluation are rank 0's (DDP broadcasts buffers from rank 0 before every forward).
    """
    if distributed and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63)


# --------------------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, experiment: Experiment, settings: RunSettings):
        settings.validate()
        self.experiment = experiment.resolved()
        self.settings = settings
        self.device = pick_device(settings.device)
        self.dist = Distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.run = RunDir(Path(settings.out) / self.experiment.id)
        self.data_dir = resolve_data_dir(settings.data_dir)
        self._preflight()
        self.progress = settings.progress if settings.progress is not None else sys.stderr.isatty()
        self.progress = self.progress and self.dist.is_main
        self._save_every: int | None = None  # steps between checkpoints inside an epoch (set after the warm-up)
        self.stop_signals = StopSignals()  # installed by fit() around the epochs

    # -- input checks: nothing is created or removed before they pass -------------------------------------
    def _preflight(self) -> None:
        """The run folder (an existing run needs --resume or --overwrite), then the precision (--amp)."""
        if self.run.exists() and not (self.settings.overwrite or self.settings.resume):
            if (self.run.read_summary() or {}).get("status") == "completed":
                raise RunError(f"{self.run.path} holds a completed run: pass --overwrite to train it again")
            raise RunError(f"{self.run.path} holds an unfinished run: pass --resume to continue it or --overwrite")
        amp = self.settings.amp
        if amp == "bf16" and self.device.type == "cpu" and native_bf16_cpu() is False:
            if self.experiment.spec.bf16_needs_cpu_instructions:  # oneDNN: no bf16 LSTM kernel without them
                raise RunError("--amp bf16 with the LSTM needs a CPU with bf16 instructions (avx512_bf16 or amx_bf16), "
                               "which this one lacks: use --amp none")
            log.warning("this CPU has no bf16 instructions: bf16 autocast is emulated and much slower than fp32 here "
                        "(use --amp none)")
        if amp == "fp16" and self.device.type != "cuda":
            raise RunError("--amp fp16 needs a CUDA device (use --amp bf16 on the CPU)")
        if amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RunError("this GPU does not support bf16: use --amp fp16")
        if amp == "bf16" and self.device.type == "cuda" and not native_bf16_cuda(self.device):
            log.warning("this GPU has no native bf16 (compute capability below 8.0, e.g. a T4): bf16 is emulated and "
                        "much slower than fp16 here (use --amp fp16)")

    def autocast(self):
        if self.settings.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # -- set-up -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        try:
            self.task: Task = make_task(self.experiment, self.settings, self.data_dir, self.device)
        except (FileNotFoundError, ValueError) as error:  # the loaders' messages name the path and the fix
            raise RunError(str(error)) from error
        torch.manual_seed(self.experiment.seed)
        self.model = sync_batchnorm(self.task.build_model(), self.device, self.dist.enabled).to(self.device)
        objective = self.model  # what the training step calls: the model (DDP and compile wrap it)
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
        self.objective = torch.compile(objective) if self.settings.compile else objective
        self.optimizer = build_optimizer(self.experiment, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.experiment.lr_milestones), gamma=self.experiment.lr_gamma
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.settings.amp == "fp16")

    def config_record(self, first_epoch: int = 1, first_step: int = 0, earlier: dict | None = None) -> dict:
        """What ``config.json`` holds: experiment, settings, task, parameter counts, environment and the attempts.

        ``first_epoch``/``first_step``: where this process starts training (epoch 1, step 0 unless resumed);
        ``earlier``: the config.json of the attempts before it, for a resumed run (see ``attempt_history``).
        """
        parameters = sum(p.numel() for p in self.model.parameters())
        learnable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        settings = {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}
        settings["data_dir"] = str(self.data_dir)  # as given (flag, $REPLAB_DATA or ./data): no machine's absolute path
        env = environment(self.device)
        attempt = attempt_record(env, time.strftime("%Y-%m-%dT%H:%M:%S%z"), first_epoch, first_step)
        return {
            "experiment": self.experiment.to_dict(),
            "settings": settings,
            "task": {"metric": self.task.metric, "higher_is_better": self.task.higher_is_better,
                     "unit": self.task.unit, **self.task.describe()},
            "parameters": {"total": parameters, "learnable": learnable},
            "world_size": self.dist.world_size,
            "environment": env,
            **attempt_history(earlier, attempt),
        }

    # -- checkpoints ----------------------------------------------------------------------------------------
    def state(self, epoch: int, best: dict) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": best,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "experiment": self.experiment.to_dict(),
        }

    def restore(self) -> tuple[int, dict, list[dict], dict | None]:
        """Load the newest readable checkpoint (``last.pt``, else ``previous.pt``); drop metrics written after it.

        Returns (epochs done, best so far, their metrics, the epoch in progress when the checkpoint was saved inside
        one: ``{"epoch", "steps", "totals", "dtypes", "train_seconds", "wall_seconds", "rng"}``, else None). A
        damaged ``last.pt`` falls back to ``previous.pt`` with a warning; no checkpoint file at all (killed before
        the first one was complete) starts from epoch 0; checkpoint files none of which can be read, or one a
        weights-only load refuses, raise ``RunError``.
        """
        candidates = training_state_files(self.run)
        if not candidates and (self.run.read_summary() or {}).get("status") == "completed":  # more epochs asked for
            raise RunError(cannot_train_further(self.run))
        if not candidates:
            if self.dist.is_main and self.run.metrics.exists():
                self.run.keep_metrics_through(0)
            return 0, {}, [], None
        problems = []
        for path in candidates:
            try:
                checkpoint = load_checkpoint(path, map_location=self.device)
                epoch, best = self._load_state(checkpoint, path)
            except CheckpointError as error:
                if error.unsafe:
                    raise RunError(f"{error}; nothing was loaded") from None
                problems.append(f"{path.name} {error.reason}")
                log.warning("cannot resume from %s: %s", path, error.reason)
                continue
            if problems:
                log.warning("%s: resuming from %s, epoch %d; the metrics of later epochs are dropped",
                            "; ".join(problems), path, epoch)
            records = self.run.keep_metrics_through(epoch) if self.dist.is_main else []
            partial = checkpoint.get("partial")
            if partial is not None:
                partial = {**partial, "rng": checkpoint["rng"]}
                log.info("resuming inside epoch %d, after step %d", partial["epoch"], partial["steps"])
            return epoch, best, records, partial
        raise RunError(f"no readable checkpoint in {self.run.path} ({'; '.join(problems)}): "
                       "start the run again with --overwrite")

    def _load_state(self, checkpoint: dict, path: Path) -> tuple[int, dict]:
        """Model, optimizer, scheduler, scaler and RNG from a checkpoint; returns (its epoch, best so far)."""
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            _set_rng_state(checkpoint["rng"])
            return int(checkpoint["epoch"]), dict(checkpoint["best"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(path, f"does not fit this run ({first_line})") from None

    # -- one pass -------------------------------------------------------------------------------------------
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

    def train_epoch(self, epoch: int, monitor: MemoryMonitor, save_partial: Callable | None = None,
                    partial: dict | None = None) -> tuple[dict, float, float]:
        """One epoch of training: (scores, training seconds, items). ``save_partial(epoch, steps, totals, seconds)``
        saves a checkpoint inside the epoch (every ``_steps_between_saves`` steps); ``partial`` (from ``restore``)
        continues the epoch a checkpoint was saved in, after its ``steps``."""
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
            done, earlier_seconds = partial["steps"], partial["train_seconds"]
            collections.deque(itertools.islice(batches, done), maxlen=0)  # the generator where the epoch stopped
            _set_rng_state(partial["rng"])
            if self.dist.is_main:  # the other ranks' statistics are in these sums already
                totals = {k: torch.tensor(v, dtype=getattr(torch, partial["dtypes"][k]), device=self.device)
                          for k, v in partial["totals"].items()}
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
                stop = self._stop_requested()
                if save_partial and (stop or (self._save_every and steps % self._save_every == 0)):
                    save_partial(epoch, steps, totals, earlier_seconds + clock.elapsed())
                if stop:
                    raise Stopped(f"stopped by {self._stop_signal()} at epoch {epoch}, step {steps} of {total}, "
                                  "with a checkpoint there")
            if self.progress:
                bar.update(loss.item(), totals["items"].item(), clock.elapsed())

        totals = self._batch_loop(batches, total, step, after, start=done, totals=totals)
        bar.close()
        seconds = earlier_seconds + clock.elapsed()
        summed = self.dist.sum(totals)
        return self.task.scores(summed), seconds, summed["items"]

    def _stop_requested(self) -> bool:
        """Whether a stop signal reached any rank (collective under DDP: every rank asks at the same step)."""
        return self.dist.any(self.stop_signals.received is not None, self.device)

    def _stop_signal(self) -> str:
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

    # -- the run ----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        e, metric = self.experiment, self.task.metric
        start_epoch, best, records, partial = self.restore() if self.settings.resume else (0, {}, [], None)
        if self.dist.is_main:
            try:
                self.run.path.mkdir(parents=True, exist_ok=True)
                self.run.remove_temporary_files()  # of a write a kill cut short
                resumed = start_epoch > 0 or partial is not None  # else a fresh start, with a new history
                self.run.write_config(self.config_record(first_epoch=start_epoch + 1,
                                                         first_step=partial["steps"] if partial else 0,
                                                         earlier=self.run.read_config() if resumed else None))
                self.run.discard_summary()  # until this attempt ends, the folder reads as a run in progress
            except OSError as error:
                raise RunError(f"cannot write the run folder {self.run.path}: {error.strerror or error}") from None
        wall_offset = partial["wall_seconds"] if partial else records[-1]["wall_seconds"] if records else 0.0
        run_clock = time.perf_counter()

        def save_partial(epoch: int, steps: int, totals: dict[str, torch.Tensor], seconds: float) -> None:
            """A checkpoint inside ``epoch``: the last completed epoch's state with the steps done since."""
            summed = self.dist.sum(totals)  # collective: every rank calls it at the same step
            if not self.dist.is_main:
                return
            state = self.state(epoch - 1, best)
            state["partial"] = {"epoch": epoch, "steps": steps, "totals": summed,
                                "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in totals.items()},
                                "train_seconds": seconds, "wall_seconds": wall_offset + time.perf_counter() - run_clock}
            try:
                self.run.save_checkpoints(state)
            except OSError as error:  # the earlier checkpoint is intact: train on, try again at the next one
                log.warning("could not save a checkpoint inside epoch %d: %s", epoch, error.strerror or error)

        status, reason = "completed", None
        log.info("%s: %s, %d parameters, device %s, epochs %d-%d", e.id, self.task.metric,
                 sum(p.numel() for p in self.model.parameters()), self.device, start_epoch + 1, e.epochs)
        release_free_memory(self.device)  # memory figures of this run only, not of an earlier run in the process
        with MemoryMonitor(self.device) as monitor, self.stop_signals:
            try:
                for epoch in range(start_epoch + 1, e.epochs + 1):
                    lr = self.optimizer.param_groups[0]["lr"]
                    continued = partial if partial and partial["epoch"] == epoch else None
                    train_scores, train_seconds, items = self.train_epoch(epoch, monitor, save_partial, continued)
                    eval_clock = Stopwatch(self.device)
                    val_scores = self.evaluate("valid")
                    eval_seconds = eval_clock.elapsed()
                    self.scheduler.step()
                    record = {
                        "epoch": epoch,
                        "train_loss": train_scores["loss"], "val_loss": val_scores["loss"],
                        f"train_{metric}": train_scores[metric], f"val_{metric}": val_scores[metric],
                        "lr": lr,
                        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                        "wall_seconds": wall_offset + time.perf_counter() - run_clock,
                        "throughput": items / max(train_seconds, 1e-9), "throughput_unit": f"{self.task.unit}/s",
                        "memory": monitor.epoch_report(),
                    }
                    if not all(math.isfinite(v) for v in (record["train_loss"], record["val_loss"])):
                        raise Diverged(f"loss became non-finite at epoch {epoch}")
                    improved = not best or better(val_scores[metric], best["value"], self.task.higher_is_better)
                    if improved:
                        best = {"value": val_scores[metric], "epoch": epoch}
                    if self.dist.is_main:
                        self._save_epoch(record, self.state(epoch, best), improved)
                    records.append(record)
                    log.info("%s", epoch_line(record, metric))
                    if improved and self.dist.is_main:
                        with monitor.paused():  # its memory is not the training's
                            self.task.keep_with_best(self.run, epoch)
                    if self._stop_requested():  # (resuming after the last epoch runs just the test)
                        raise Stopped(f"stopped by {self._stop_signal()} after epoch {epoch}")
            except Diverged as error:
                status, reason = "diverged", str(error)
            except WriteFailed as error:
                status, reason = "failed", str(error)
            except Stopped as error:
                status, reason = "interrupted", f"{error}; continue with --resume"
            except KeyboardInterrupt as error:  # Python's own Ctrl-C, or a second signal (StopSignals)
                how = f"at once by a second {error}" if str(error) else "by the user (Ctrl-C)"
                status, reason = "interrupted", f"stopped {how}; continue with --resume (from the last checkpoint)"
            except Exception as error:  # recorded, then raised again
                status, reason = "failed", f"{type(error).__name__}: {error}"
                self._finish(records, best, status, reason)
                raise
        tests = self.test() if status == "completed" and records else {}
        summary = self._finish(records, best, status, reason, tests)
        if status == "completed" and self.dist.is_main:  # its sample, if an earlier attempt left it out; the clean-up
            self.task.keep_with_best(self.run, best["epoch"])
            release_training_state(self.run, self.settings.keep_checkpoints)
        return summary

    def _save_epoch(self, record: dict, state: dict, improved: bool) -> None:
        """The epoch's metrics line, then its checkpoints (``replab.checkpoints``); a failed write keeps the others."""
        try:
            self.run.append_metrics(record)
            self.run.save_checkpoints(state, best_state(state, self.settings.keep_checkpoints) if improved else None)
        except OSError as error:
            raise WriteFailed(f"could not write to {self.run.path}: {error.strerror or error}; the last good "
                              "checkpoint and metrics are kept: free space, then --resume") from error

    def test(self) -> dict:
        """Test scores of the model as trained (``test_final``) and of the best validation checkpoint
        (``test_best``, with its epoch; left out, with a warning, when that checkpoint cannot be loaded)."""
        scores = {"test_final": self.evaluate("test")}
        self.dist.barrier()  # rank 0 wrote best.pt (single-node: one shared folder)
        if self.run.best_checkpoint.exists():
            try:
                checkpoint = load_checkpoint(self.run.best_checkpoint, map_location=self.device)
                self.model.load_state_dict(checkpoint["model"])
                scores["test_best"] = {**self.evaluate("test"), "epoch": checkpoint["epoch"]}
            except (CheckpointError, RuntimeError) as error:
                log.warning("no test score of the best checkpoint: %s", error)
        return scores

    def _finish(self, records: list[dict], best: dict, status: str, reason: str | None,
                tests: dict | None = None) -> dict:
        """The run's summary (with the test scores ``tests``), written to ``summary.json`` by rank 0."""
        metric = self.task.metric
        summary = {
            "id": self.experiment.id,
            "status": status,
            "reason": reason,
            "metric": metric,
            "higher_is_better": self.task.higher_is_better,
            "epochs_completed": len(records),
            "epochs_planned": self.experiment.epochs,
            "best_val": best.get("value"),
            "best_epoch": best.get("epoch"),
        }
        if records:
            last = records[-1]
            summary.update({
                "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
                f"final_train_{metric}": last[f"train_{metric}"], f"final_val_{metric}": last[f"val_{metric}"],
                "total_seconds": last["wall_seconds"],
                "mean_epoch_seconds": sum(r["train_seconds"] for r in records) / len(records),
                "memory": memory_summary(records),
            })
        summary.update(tests or {})
        if self.dist.is_main:
            try:
                self.run.write_summary(summary)
            except OSError as error:
                log.error("could not write %s: %s", self.run.summary, error.strerror or error)
        log.info("%s", closing_line(self.experiment.id, summary), extra=FILE_ONLY)  # the console's: the caller's
        return summary


def _set_rng_state(rng: dict) -> None:
    """The global RNG states a checkpoint recorded (``Trainer.state``): the CPU's, and CUDA's where both exist."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])


def _attach_log_file(run: RunDir) -> logging.Handler:
    run.path.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("replab")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the epoch lines
    logger.addHandler(handler)
    return handler


ATTEMPT_ENVIRONMENT = ("git_commit", "torch", "device", "device_name", "hostname")  # recorded per attempt


def attempt_record(env: dict, started: str | None, from_epoch: int | None, from_step: int | None) -> dict:
    """One entry of config.json's ``attempts``: when a process started, where in the run (epoch, step inside it),
    and the ``ATTEMPT_ENVIRONMENT`` part of its ``environment()``."""
    return {"started": started, "from_epoch": from_epoch, "from_step": from_step,
            **{k: env.get(k) for k in ATTEMPT_ENVIRONMENT}}


def attempt_history(earlier: dict | None, attempt: dict) -> dict:
    """``{"started", "attempts"}`` of config.json: when the run first started, and every process that trained it.

    ``attempt``: this process's ``attempt_record``. ``earlier``: the
    config.json written by the attempt before (None for a fresh start). A config.json from before attempts were
    recorded stands for one attempt, rebuilt from its ``started`` and ``environment`` (where it began: unknown).
    A run resumed from another commit or machine thus says which epochs came from which.
    """
    if not earlier:
        return {"started": attempt["started"], "attempts": [attempt]}
    before = earlier.get("attempts") or [attempt_record(earlier.get("environment") or {}, earlier.get("started"),
                                                        None, None)]
    return {"started": earlier.get("started") or attempt["started"], "attempts": [*before, attempt]}


def completed_summary(experiment: Experiment, settings: RunSettings) -> dict | None:
    """The summary of this experiment's run if it completed all its epochs already, else None."""
    summary = RunDir(Path(settings.out) / experiment.id).read_summary() or {}
    done = summary.get("status") == "completed" and summary.get("epochs_completed", 0) >= experiment.epochs
    return summary if done else None


def train(experiment: Experiment, settings: RunSettings) -> dict:
    """Train one experiment; returns its summary. Raises ``RunError`` for bad input before touching any file.

    With ``settings.resume``, a run that already completed its epochs is left as it is and its summary returned.
    The run folder is locked for the whole run (rank 0): a second process on it gets ``RunError`` at once.
    """
    if settings.resume and (summary := completed_summary(experiment, settings)) is not None:
        log.info("%s already completed: nothing to resume", experiment.id)
        return summary
    trainer = Trainer(experiment, settings)  # input checks: they read, create nothing, take no lock
    with _locked_run_folder(trainer.run, trainer.dist.is_main):
        trainer.setup()
        if settings.overwrite and trainer.dist.is_main:
            trainer.run.remove_contents()
        trainer.dist.barrier()
        handler = _attach_log_file(trainer.run) if trainer.dist.is_main else None
        try:
            return trainer.fit()
        finally:
            if handler is not None:
                logging.getLogger("replab").removeHandler(handler)
                handler.close()


@contextlib.contextmanager
def _locked_run_folder(run: RunDir, is_main: bool):
    """Hold the run folder's lock (rank 0 only). Folders this creates are removed again if the run leaves
    nothing in them (bad input found after the lock was taken)."""
    if not is_main:
        yield
        return
    created = [p for p in (run.path, *run.path.parents) if not p.exists()]
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the run folder {run.path}: {error.strerror or error}") from None
    lock = RunLock(run.path)
    try:
        lock.acquire()
    except RunLocked as error:
        raise RunError(str(error)) from None
    try:
        yield
    finally:
        lock.release()
        if created and [p.name for p in run.path.iterdir()] == [".lock"]:
            lock.path.unlink(missing_ok=True)
            for folder in created:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()
