"""One trainer for every experiment: set-up, the epochs, the test scores, the run's records, resume and DDP.

``train(experiment, settings)`` runs one experiment into ``<settings.out>/<experiment.id>/`` and returns its
summary; the experiment comes resolved and validated (``replab.experiments.configure``), the settings validated
(``RunSettings``). Task differences (data, loss, score) live in ``replab.tasks``; this module knows none of them.
What a checkpoint holds, resume and the checkpoints inside an epoch: ``replab.checkpoints``; the records of the run
folder (``config.json`` with its attempts, ``summary.json``): ``replab.runlog``.

Reproducibility: the model is initialised from ``seed`` and every epoch re-seeded from ``(seed, e)``
(``replab.loop``), so a run resumed from the checkpoint of epoch ``e - 1`` continues with exactly the numbers of an
uninterrupted run on the same device. Inside an epoch a checkpoint is also saved about every
``settings.checkpoint_minutes`` of training, which a resume continues with the same numbers too (under DDP the
carried statistics are summed over ranks once, so the epoch's training loss may differ in its last bits). Ctrl-C or
SIGTERM saves such a checkpoint after the step in progress and ends the run as ``interrupted`` (``StopSignals``;
under DDP the ranks agree on that step).

Distributed: launched by ``torchrun`` (``WORLD_SIZE > 1``), the model is wrapped in
``DistributedDataParallel``; ``batch_size`` is the *global* batch, split without overlap across ranks, so the
learning rate keeps its meaning whatever the number of processes (on GPUs BatchNorm too normalises over the
global batch: ``SyncBatchNorm``); statistics are summed over ranks; only rank 0 writes files and to the console
(``replab.console``). What a run keeps on disk, and when: ``replab.checkpoints``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from replab.checkpoints import (
    CheckpointError,
    Resume,
    ResumeError,
    TrainingState,
    best_state,
    load_checkpoint,
    partial_epoch_state,
    release_training_state,
    restore,
)
from replab.console import FILE_ONLY, closing_line, epoch_line, log_file
from replab.datadir import resolve_data_dir
from replab.experiments import Experiment, RunSettings
from replab.loop import Diverged, EpochLoop, Stopped
from replab.runlog import RunDir, RunLock, RunLocked, better, config_record, run_summary
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


# --------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One run of an experiment: set-up, the epochs, evaluation and test, the run folder's records.

    ``experiment`` is taken as it is: resolved and validated (``replab.experiments.configure``, or
    ``Experiment.resolved``); ``settings`` are validated when made (``RunSettings``).
    """

    def __init__(self, experiment: Experiment, settings: RunSettings):
        if not experiment.is_resolved:
            raise RunError(f"{experiment.id}: an experiment as the registry holds it, not resolved: pass "
                           "replab.experiments.configure(id, ...) or experiment.resolved()")
        self.experiment = experiment
        self.settings = settings
        try:
            self.device = pick_device(settings.device)
        except ValueError as error:
            raise RunError(str(error)) from None
        self.dist = Distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.run = RunDir(Path(settings.out) / self.experiment.id)
        self.data_dir = resolve_data_dir(settings.data_dir)
        self._preflight()
        self.progress = settings.progress if settings.progress is not None else sys.stderr.isatty()
        self.progress = self.progress and self.dist.is_main
        self.stop_signals = StopSignals()  # installed by fit() around the epochs
        self.best: dict = {}  # the best validation score so far and its epoch: {"value", "epoch"}
        self.records: list[dict] = []  # the epoch lines of metrics.jsonl, this attempt's and the ones it resumed

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
        self.training = TrainingState(self.model, self.optimizer, self.scheduler, self.scaler,
                                      self.experiment.to_dict())  # what a checkpoint saves and restores
        self.loop = EpochLoop(self.experiment, self.settings, self.task, self.model, self.objective, self.optimizer,
                              self.scaler, self.device, self.dist, self.stop_signals, self.progress)

    def _save_partial(self, epoch: int, steps: int, totals: dict[str, torch.Tensor], seconds: float) -> None:
        """A checkpoint inside ``epoch``: the last completed epoch's state with the steps done since
        (``partial_epoch_state``). A failed write keeps the earlier checkpoint: training goes on, the next save tries
        again."""
        summed = self.dist.sum(totals)  # collective: every rank calls it at the same step
        if not self.dist.is_main:
            return
        state = partial_epoch_state(self.training.state(epoch - 1, self.best), epoch, steps, totals, summed, seconds,
                                    self._wall_seconds())
        try:
            self.run.save_checkpoints(state)
        except OSError as error:  # the earlier checkpoint is intact: train on, try again at the next one
            log.warning("could not save a checkpoint inside epoch %d: %s", epoch, error.strerror or error)

    # -- the run ----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """The epochs from where the run stands (``--resume``), then the test scores and the summary; returns the
        summary. A diverged, stopped or failed run ends with its status and reason in the summary."""
        resume = self._begin()
        self.best, self.records = resume.best, resume.records
        last = resume.partial or (self.records[-1] if self.records else {"wall_seconds": 0.0})
        self._wall_offset, self._run_clock = last["wall_seconds"], time.perf_counter()
        e = self.experiment
        log.info("%s: %s, %d parameters, device %s, epochs %d-%d", e.id, self.task.metric,
                 sum(p.numel() for p in self.model.parameters()), self.device, resume.epoch + 1, e.epochs)
        release_free_memory(self.device)  # memory figures of this run only, not of an earlier run in the process
        with MemoryMonitor(self.device) as monitor, self.stop_signals:
            status, reason = self._train_epochs(resume, monitor)
        tests = self.test() if status == "completed" and self.records else {}
        summary = self._finish(status, reason, tests)
        if status == "completed" and self.dist.is_main:  # its sample, if an earlier attempt left it out; the clean-up
            self.task.keep_with_best(self.run, self.best["epoch"])
            release_training_state(self.run, self.settings.keep_checkpoints)
        return summary

    def _begin(self) -> Resume:
        """Where this attempt starts (``restore`` with ``--resume``), recorded in ``config.json`` with the attempts
        before it; a summary of an earlier attempt is removed (until this one ends, the run is in progress)."""
        resume = self._restore() if self.settings.resume else Resume()
        if not self.dist.is_main:
            return resume
        try:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.remove_temporary_files()  # of a write a kill cut short
            resumed = resume.epoch > 0 or resume.partial is not None  # else a fresh start, with a new history
            self.run.write_config(self._config_record(first_epoch=resume.epoch + 1,
                                                      first_step=resume.partial["steps"] if resume.partial else 0,
                                                      earlier=self.run.read_config() if resumed else None))
            self.run.discard_summary()
        except OSError as error:
            raise RunError(f"cannot write the run folder {self.run.path}: {error.strerror or error}") from None
        return resume

    def _restore(self) -> Resume:
        try:
            return restore(self.run, self.training, self.device, self.dist.is_main)
        except ResumeError as error:
            raise RunError(str(error)) from None

    def _config_record(self, first_epoch: int, first_step: int, earlier: dict | None) -> dict:
        """``config.json`` (``replab.runlog.config_record``): experiment, settings, task, parameter counts,
        environment and the attempts; ``first_epoch``/``first_step``: where this process starts training."""
        parameters = sum(p.numel() for p in self.model.parameters())
        learnable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        settings = {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}
        settings["data_dir"] = str(self.data_dir)  # as given (flag, $REPLAB_DATA or ./data): no machine's absolute path
        run = {
            "experiment": self.experiment.to_dict(),
            "settings": settings,
            "task": {"metric": self.task.metric, "higher_is_better": self.task.higher_is_better,
                     "unit": self.task.unit, **self.task.describe()},
            "parameters": {"total": parameters, "learnable": learnable},
            "world_size": self.dist.world_size,
        }
        env = environment(self.device)
        return config_record(run, env, time.strftime("%Y-%m-%dT%H:%M:%S%z"), first_epoch, first_step, earlier)

    def _wall_seconds(self) -> float:
        """Wall-clock seconds of the run so far, its earlier attempts' included."""
        return self._wall_offset + time.perf_counter() - self._run_clock

    def _train_epochs(self, resume: Resume, monitor: MemoryMonitor) -> tuple[str, str | None]:
        """The epochs still to train: (status, reason) of how they ended. An unexpected error is recorded as
        ``failed`` in the summary, then raised again."""
        try:
            for epoch in range(resume.epoch + 1, self.experiment.epochs + 1):
                partial = resume.partial if resume.partial and resume.partial["epoch"] == epoch else None
                self._epoch(epoch, monitor, partial)
        except Diverged as error:
            return "diverged", str(error)
        except WriteFailed as error:
            return "failed", str(error)
        except Stopped as error:
            return "interrupted", f"{error}; continue with --resume"
        except KeyboardInterrupt as error:  # Python's own Ctrl-C, or a second signal (StopSignals)
            how = f"at once by a second {error}" if str(error) else "by the user (Ctrl-C)"
            return "interrupted", f"stopped {how}; continue with --resume (from the last checkpoint)"
        except Exception as error:  # recorded, then raised again
            self._finish("failed", f"{type(error).__name__}: {error}")
            raise
        return "completed", None

    def _epoch(self, epoch: int, monitor: MemoryMonitor, partial: dict | None) -> None:
        """Train and validate one epoch; its line in metrics.jsonl, its checkpoints, the best so far."""
        metric = self.task.metric
        lr = self.optimizer.param_groups[0]["lr"]
        train_scores, train_seconds, items = self.loop.train_epoch(epoch, monitor, self._save_partial, partial)
        eval_clock = Stopwatch(self.device)
        val_scores = self.loop.evaluate("valid")
        eval_seconds = eval_clock.elapsed()
        self.scheduler.step()
        record = {
            "epoch": epoch,
            "train_loss": train_scores["loss"], "val_loss": val_scores["loss"],
            f"train_{metric}": train_scores[metric], f"val_{metric}": val_scores[metric],
            "lr": lr,
            "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "wall_seconds": self._wall_seconds(),
            "throughput": items / max(train_seconds, 1e-9), "throughput_unit": f"{self.task.unit}/s",
            "memory": monitor.epoch_report(),
        }
        if not all(math.isfinite(v) for v in (record["train_loss"], record["val_loss"])):
            raise Diverged(f"loss became non-finite at epoch {epoch}")
        improved = not self.best or better(val_scores[metric], self.best["value"], self.task.higher_is_better)
        if improved:
            self.best = {"value": val_scores[metric], "epoch": epoch}
        if self.dist.is_main:
            self._save_epoch(record, self.training.state(epoch, self.best), improved)
        self.records.append(record)
        log.info("%s", epoch_line(record, metric))
        if improved and self.dist.is_main:
            with monitor.paused():  # its memory is not the training's
                self.task.keep_with_best(self.run, epoch)
        if self.loop.stop_requested():  # (resuming after the last epoch runs just the test)
            raise Stopped(f"stopped by {self.loop.stop_signal()} after epoch {epoch}")

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
        scores = {"test_final": self.loop.evaluate("test")}
        self.dist.barrier()  # rank 0 wrote best.pt (single-node: one shared folder)
        if self.run.best_checkpoint.exists():
            try:
                checkpoint = load_checkpoint(self.run.best_checkpoint, map_location=self.device)
                self.model.load_state_dict(checkpoint["model"])
                scores["test_best"] = {**self.loop.evaluate("test"), "epoch": checkpoint["epoch"]}
            except (CheckpointError, RuntimeError) as error:
                log.warning("no test score of the best checkpoint: %s", error)
        return scores

    def _finish(self, status: str, reason: str | None, tests: dict | None = None) -> dict:
        """The run's summary (``replab.runlog.run_summary``, with the test scores ``tests``), written to
        ``summary.json`` by rank 0."""
        summary = run_summary(self.experiment.id, status, reason, self.task.metric, self.task.higher_is_better,
                              self.experiment.epochs, self.records, self.best, tests)
        if self.dist.is_main:
            try:
                self.run.write_summary(summary)
            except OSError as error:
                log.error("could not write %s: %s", self.run.summary, error.strerror or error)
        log.info("%s", closing_line(self.experiment.id, summary), extra=FILE_ONLY)  # the console's: the caller's
        return summary


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
        with log_file(trainer.run.log) if trainer.dist.is_main else contextlib.nullcontext():
            return trainer.fit()


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
