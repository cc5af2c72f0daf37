"""The runs as the report sees them: the numbers every table, figure and finding needs, computed in one place.

A ``RunView`` reads one run folder (complete or not) through ``replab.runlog``; ``replab.report.study`` groups them
by grid and tells a grid's runs from its side runs. The metric and its direction come from the run's record, else
from its model's task kind in the registry (``replab.models``): the report never loads the training side.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from replab.experiments import BLOCKS, EXPERIMENTS, OPTIMIZERS
from replab.models import MODELS, ModelSpec
from replab.report.formatting import is_number
from replab.report.reference import SETTING_SOURCES, display
from replab.runlog import RunRecord, better, memory_summary

# Extra float32 copies of the learnable parameters an optimizer keeps (Adam/AdamW: two moments; momentum: one buffer).
OPTIMIZER_STATE_COPIES = {"adam": 2, "adamw": 2, "momentum": 1, "sgd": 0}
CIFAR_VALID_IMAGES = 5000  # the seeded 45k/5k split of replab.data.cifar10
STATUS_TEXT = {"running": "incomplete", "missing": "not started"}
# Epoch times closer than this are not a difference in cost: undisturbed epochs of one run spread this much (a
# 6-layer ViT's quiet CPU epochs: 889-948 s, 6.6 %), and an A/B of two equal-cost steps differs by ~1 %.
SAME_COST_MARGIN = 0.05


def _number(value) -> float:
    """A stored value as a float: ``None`` (NaN/inf stored as null) becomes NaN."""
    return float("nan") if value is None else float(value)


def _device_text(env: dict) -> str:
    """``cpu (AMD EPYC, AVX512)`` from an environment or attempt record."""
    device, name = env.get("device") or "?", env.get("device_name")
    return f"{device} ({name})" if name and name != device else device


# ------------------------------------------------------------------------------------------------ one run
@dataclass
class RunView:
    """One run folder, read-only, with the derived numbers of the report."""

    record: RunRecord
    key: str = ""  # unique name in the report (file names): the id; a side run's folder name (or the id suffixed)
    missing: bool = False  # a placeholder for a grid member that no folder holds
    side: bool = False  # another folder holds the grid's run of this id: kept beside the grid, not in it

    @classmethod
    def placeholder(cls, experiment_id: str) -> RunView:
        """A grid member that was never run: its registry configuration and no records."""
        config = {"experiment": EXPERIMENTS[experiment_id].resolved().to_dict()}
        return cls(RunRecord(Path(experiment_id), config), experiment_id, missing=True)

    # -- what was trained ------------------------------------------------------------------------------
    @property
    def experiment(self) -> dict:
        return self.record.config.get("experiment", {})

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def task(self) -> str:
        """The model's name in the registry (recorded as ``task``), which is also its grid's name."""
        recorded = self.experiment.get("task")
        if recorded:
            return recorded
        return EXPERIMENTS[self.id].model if self.id in EXPERIMENTS else ""

    @property
    def spec(self) -> ModelSpec | None:
        """The model's registry entry (None for a model this version does not know)."""
        return MODELS.get(self.task)

    @property
    def number(self) -> int:
        """The specification's experiment number (``vit-3`` -> 3); 0 for the CNNs."""
        suffix = self.id.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else 0

    @property
    def optimizer(self) -> str:
        return self.experiment.get("optimizer", "")

    @property
    def optimizer_name(self) -> str:
        return display(self.optimizer)

    @property
    def layers(self) -> int | None:
        """Number of layers, for a model that has them (not the CNNs, whose old records say 1)."""
        has_layers = self.spec is None or "num_layers" in self.spec.options()
        return self.experiment.get("num_layers") if has_layers else None

    @property
    def variant(self) -> str | None:
        """The registry name of the model's variant (``postnorm``, ``resnet``), if the model has variants."""
        return self.experiment.get(self.spec.variant) if self.spec and self.spec.variant else None

    @property
    def architecture(self) -> str:
        """The variant's name where the model has variants (PreNorm/PostNorm, the CNN's network), else the
        model's (LSTM)."""
        return display(self.variant if self.spec and self.spec.variant else self.task)

    @property
    def short_label(self) -> str:
        """E.g. ``1 Adam 2L`` (with ``PostNorm`` where the variant is not the model's default); a model without
        layers: its variant (``ResNet``)."""
        if self.layers is None:
            return self.architecture
        default = self.spec.config.__dataclass_fields__[self.spec.variant].default if self.variant else None
        variant = f" {self.architecture}" if self.variant and self.variant != default else ""
        return f"{self.number} {self.optimizer_name} {self.layers}L{variant}"

    @property
    def configuration(self) -> str:
        """E.g. ``PreNorm, 2 layers, Adam``."""
        layers = f", {self.layers} layer{'s' if self.layers != 1 else ''}" if self.layers else ""
        return f"{self.architecture}{layers}, {self.optimizer_name}"

    @property
    def description(self) -> str:
        """E.g. ``vit-1 (PreNorm, 2 layers, Adam)``."""
        return f"{self.id} ({self.configuration})"

    @property
    def hyperparameters(self) -> str:
        """E.g. ``lr 0.0003, weight decay 0.0005, batch 128, 10 epochs``."""
        e = self.experiment
        momentum = f", momentum {e['momentum']}" if e.get("momentum") else ""
        return (f"lr {e.get('lr')}, weight decay {e.get('weight_decay')}{momentum}, batch {e.get('batch_size')}, "
                f"{e.get('epochs')} epochs")

    def sort_key(self) -> tuple:
        """Architecture (registry order), then layers, then optimizer (registry order), then number."""
        block = self.experiment.get("block", "")
        return (BLOCKS.index(block) if block in BLOCKS else len(BLOCKS), self.layers or 0,
                OPTIMIZERS.index(self.optimizer) if self.optimizer in OPTIMIZERS else len(OPTIMIZERS), self.number,
                self.id)

    # -- task, status ---------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        recorded = self.record.config.get("task", {}).get("metric")
        return recorded or (self.spec.task.metric if self.spec else "accuracy")

    @property
    def higher_is_better(self) -> bool:
        recorded = self.record.config.get("task", {}).get("higher_is_better")
        if recorded is not None:
            return recorded
        return self.spec.task.higher_is_better if self.spec else self.metric == "accuracy"

    @property
    def status(self) -> str:
        """completed, interrupted, diverged, failed, incomplete (metrics, no summary), damaged (a file cannot be
        read), not started or missing."""
        if self.missing:
            return "missing"
        return STATUS_TEXT.get(self.record.status, self.record.status)

    @property
    def completed(self) -> bool:
        return self.status == "completed" and self.epochs_completed > 0

    @property
    def epochs_completed(self) -> int:
        return len(self.record.metrics)

    @property
    def epochs_planned(self) -> int | None:
        return self.record.summary.get("epochs_planned", self.experiment.get("epochs"))

    @property
    def status_text(self) -> str:
        """The status with the epochs done, e.g. ``diverged (3/10 epochs)``."""
        if self.status in ("completed", "missing"):
            return {"completed": "completed", "missing": "missing (not run)"}[self.status]
        return f"{self.status} ({self.epochs_completed}/{self.epochs_planned or '?'} epochs)"

    @property
    def reason(self) -> str | None:
        """Why an unfinished run stopped (shortened to one line)."""
        reason = "; ".join(self.record.problems) or self.record.summary.get("reason")
        return None if not reason else reason if len(reason) <= 100 else reason[:99].rstrip() + "…"

    # -- curves ---------------------------------------------------------------------------------------
    def series(self, key: str) -> list[float]:
        """One value per epoch record (NaN where it was not stored or stored as null)."""
        return [_number(r.get(key)) for r in self.record.metrics]

    @property
    def epochs(self) -> list[int]:
        return [int(r["epoch"]) for r in self.record.metrics]

    # -- scores ---------------------------------------------------------------------------------------
    @property
    def best(self) -> tuple[float | None, int | None]:
        """Best validation score over the epochs and its epoch (from the metrics, so unfinished runs have one)."""
        best_value, best_epoch = None, None
        for epoch, value in zip(self.epochs, self.series(f"val_{self.metric}"), strict=True):
            if is_number(value) and (best_value is None or better(value, best_value, self.higher_is_better)):
                best_value, best_epoch = value, epoch
        if best_value is None:
            return self.record.summary.get("best_val"), self.record.summary.get("best_epoch")
        return best_value, best_epoch

    @property
    def best_val(self) -> float | None:
        return self.best[0]

    @property
    def best_epoch(self) -> int | None:
        return self.best[1]

    def final(self, key: str) -> float | None:
        """The last epoch's value of a metrics key (``train_loss``, ``val_accuracy``...), None if not finite."""
        values = self.series(key)
        return values[-1] if values and is_number(values[-1]) else None

    def test(self, which: str = "test_best") -> float | None:
        """Test score of the best-validation checkpoint (``test_best``) or of the last epoch (``test_final``)."""
        value = self.record.summary.get(which, {}).get(self.metric)
        return value if is_number(value) else None

    # -- time ------------------------------------------------------------------------------------------
    # On a machine shared with other work an epoch's time says as much about the load as about the run, so the
    # report uses robust statistics of the epochs' training seconds: the median (a typical epoch; a minority of
    # slowed epochs does not move it) and the fastest epoch (the least disturbed one: the best estimate of what
    # the configuration itself costs, the rule ``timeit`` follows).
    @property
    def epoch_seconds(self) -> list[float]:
        """Training seconds of each epoch (those recorded)."""
        return [s for s in self.series("train_seconds") if is_number(s)]

    @property
    def median_epoch_seconds(self) -> float | None:
        return statistics.median(self.epoch_seconds) if self.epoch_seconds else None

    @property
    def fastest_epoch_seconds(self) -> float | None:
        return min(self.epoch_seconds, default=None)

    def slower_than(self, other: RunView) -> bool:
        """Whether this run's epochs cost more than ``other``'s beyond the machine's variation: even its fastest
        epoch took more than ``SAME_COST_MARGIN`` longer than ``other``'s median one. A difference inside that range
        may be the load's, or the spread of one run's undisturbed epochs."""
        mine, theirs = self.fastest_epoch_seconds, other.median_epoch_seconds
        return mine is not None and theirs is not None and mine > theirs * (1 + SAME_COST_MARGIN)

    @property
    def seconds_text(self) -> str:
        """E.g. ``median 482.5 s/epoch (fastest 262.0 s)``."""
        if self.median_epoch_seconds is None:
            return "no epoch time"
        return f"median {self.median_epoch_seconds:.1f} s/epoch (fastest {self.fastest_epoch_seconds:.1f} s)"

    @property
    def total_seconds(self) -> float | None:
        value = self.record.summary.get("total_seconds")
        return value if is_number(value) else self.final("wall_seconds")

    @property
    def gap(self) -> float | None:
        """How much better the model does on its training data at the last epoch (positive: overfitting side).

        Accuracy: train minus validation accuracy. Perplexity: validation minus training loss in nats, i.e. the log
        of the ratio of the perplexities, which compares runs at different perplexity levels.
        """
        if self.metric != "accuracy":
            return self.loss_gap
        train, val = self.final("train_accuracy"), self.final("val_accuracy")
        return None if train is None or val is None else train - val

    @property
    def loss_gap(self) -> float | None:
        train, val = self.final("train_loss"), self.final("val_loss")
        return None if train is None or val is None else val - train

    @property
    def gap_text(self) -> str:
        """E.g. ``+2.00 pp`` or ``+0.405 nats (validation perplexity ×1.50 the training one)``."""
        if self.gap is None:
            return "—"
        if self.metric == "accuracy":
            return f"{self.gap * 100:+.2f} pp"
        return f"{self.gap:+.3f} nats (validation perplexity ×{math.exp(self.gap):.2f} the training one)"

    @property
    def epochs_since_peak(self) -> int | None:
        return None if self.best_epoch is None else self.epochs[-1] - self.best_epoch

    @property
    def validation_size(self) -> int | None:
        """Images the validation score was computed on (CIFAR-10 tasks only)."""
        if self.metric != "accuracy":
            return None
        limit = self.settings.get("limit_eval_batches")
        batch = self.experiment.get("batch_size") or 0
        return min(CIFAR_VALID_IMAGES, limit * batch) if limit else CIFAR_VALID_IMAGES

    # -- size and memory -------------------------------------------------------------------------------
    @property
    def parameters(self) -> int | None:
        return self.record.config.get("parameters", {}).get("total")

    @property
    def learnable(self) -> int | None:
        return self.record.config.get("parameters", {}).get("learnable")

    @property
    def memory(self) -> dict:
        """``source``, ``steady_mean_mb``, ``peak_mb`` from the summary, else from the epoch records (as the
        trainer summarises them)."""
        if self.record.summary.get("memory"):
            return self.record.summary["memory"]
        return memory_summary(self.record.metrics)

    @property
    def static_memory_mib(self) -> float | None:
        """Weights + gradients + optimizer state, in MiB, if every one is a float32 copy of the learnable params."""
        if self.learnable is None or self.optimizer not in OPTIMIZER_STATE_COPIES:
            return None
        return self.learnable * 4 * (2 + OPTIMIZER_STATE_COPIES[self.optimizer]) / 2**20

    # -- provenance ------------------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return self.record.config.get("settings", {})

    @property
    def environment(self) -> dict:
        return self.record.config.get("environment", {})

    @property
    def device(self) -> str:
        """E.g. ``cpu (AMD EPYC, AVX512)``; a run resumed on other devices lists each, first to last."""
        attempts = self.record.config.get("attempts") or [self.environment]
        return ", then ".join(dict.fromkeys(_device_text(a) for a in attempts))

    @property
    def commit(self) -> str:
        """The short git commit of the code; a run resumed under other commits lists each, first to last."""
        attempts = self.record.config.get("attempts") or [self.environment]
        commits = [a.get("git_commit") or "unknown" for a in attempts]
        short = [c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in commits]
        return ", ".join(dict.fromkeys(short))

    @property
    def limits(self) -> list[str]:
        """The batch limits of the run (empty for a run over the whole data)."""
        s = self.settings
        limits = []
        if s.get("limit_train_batches"):
            limits.append(f"train ≤ {s['limit_train_batches']} batches/epoch")
        if s.get("limit_eval_batches"):
            limits.append(f"eval ≤ {s['limit_eval_batches']} batches")
        return limits

    @property
    def deviations(self) -> list[str]:
        """Hyperparameters that differ from the registry's configuration of this id (the specification's; for the
        CNNs the reference training's, ``SETTING_SOURCES``), and an LSTM that learned its embeddings (the
        specification's are GPT-1's, frozen: no embeddings file was given)."""
        spec = EXPERIMENTS.get(self.id)
        if spec is None:
            return ["not an experiment of the specification"]
        expected = json.loads(json.dumps(spec.resolved().to_dict()))
        source = SETTING_SOURCES.get(self.task, "spec")
        found = [f"{key} {self.experiment.get(key)} ({source} {value})" for key, value in expected.items()
                 if self.experiment.get(key) != value]
        embeddings = str(self.record.config.get("task", {}).get("embeddings") or "")
        if embeddings.startswith("learned"):
            found.append("embeddings learned (spec GPT-1's, frozen)")
        return found

    @property
    def differences(self) -> list[str]:
        """What differs from its full setting: the batch limits, then the deviations."""
        return self.limits + self.deviations

    @property
    def full_spec(self) -> bool:
        """Trained with its full setting (the specification's; the CNNs: the reference training's): no batch limits,
        no changed hyperparameter."""
        return not self.differences

    @property
    def provenance(self) -> str:
        """One line: device, precision, commit, and whether this is the specification's full setting."""
        amp = self.settings.get("amp", "none")
        line = f"device {self.device}, amp {amp}, commit {self.commit}"
        if self.full_spec:
            return line + ", full setting"
        return line + "; " + self.not_full_text

    @property
    def not_full_text(self) -> str:
        """``NOT at its full setting: epochs 10 (reference training 180)``, or empty for a run at its full setting."""
        differences = self.differences
        return "NOT at its full setting: " + "; ".join(differences) if differences else ""
