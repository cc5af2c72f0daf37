"""The one registry of experiments: the specification's 13 configurations and the CNN baselines, as dataclasses.

An ``Experiment`` says *what* is trained (model, optimizer, schedule); ``RunSettings`` says *how* this run is
executed (device, precision, data folder, limits). Both are recorded in full in every run's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
TASKS = ("lstm", "vit", "cnn")
BLOCKS = ("prenorm", "postnorm")
AMP_MODES = ("none", "bf16", "fp16")
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_MOMENTUM = 0.9


@dataclass(frozen=True)
class Experiment:
    """One configuration of the study. ``weight_decay``/``momentum`` of ``None`` mean "the optimizer's rule":
    weight decay 5e-4 where the optimizer takes it (not ``adam``), momentum 0.9 for ``momentum`` only."""

    id: str
    task: str  # "lstm", "vit" or "cnn"
    optimizer: str
    lr: float
    batch_size: int
    epochs: int = 10
    seed: int = 42
    num_layers: int = 1
    weight_decay: float | None = None
    momentum: float | None = None
    lr_milestones: tuple[int, ...] = ()  # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1
    # LSTM
    hidden_size: int = 512
    embedding_size: int = 768
    # ViT
    block: str = "prenorm"
    embed_dim: int = 256
    hidden_dim: int = 512
    num_heads: int = 8
    patch_size: int = 4
    dropout: float = 0.0
    # CNN
    architecture: str = ""

    def resolved(self) -> Experiment:
        """Fill weight decay and momentum from the optimizer's rule, and check every field."""
        weight_decay = self.weight_decay
        if weight_decay is None:
            weight_decay = 0.0 if self.optimizer == "adam" else DEFAULT_WEIGHT_DECAY
        momentum = self.momentum
        if momentum is None:
            momentum = DEFAULT_MOMENTUM if self.optimizer == "momentum" else 0.0
        experiment = dataclasses.replace(self, weight_decay=weight_decay, momentum=momentum)
        experiment.validate()
        return experiment

    def validate(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {', '.join(TASKS)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.block not in BLOCKS:
            problems.append(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        for name in ("lr", "batch_size", "epochs", "num_layers"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "momentum", "dropout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0, got {value}")
        if self.momentum and self.optimizer != "momentum":
            problems.append(f"momentum={self.momentum} needs --optimizer momentum (got {self.optimizer})")
        if self.weight_decay and self.optimizer == "adam":
            problems.append("adam takes no weight decay in this study: use --optimizer adamw")
        if problems:
            raise ValueError(f"invalid configuration {self.id}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Every field that applies to this experiment's task (the ViT's fields are not shown for an LSTM)."""
        skip = {name for task, names in TASK_FIELDS.items() if task != self.task for name in names}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


TASK_FIELDS = {
    "lstm": ("hidden_size", "embedding_size"),
    "vit": ("block", "embed_dim", "hidden_dim", "num_heads", "patch_size", "dropout"),
    "cnn": ("architecture",),
}


@dataclass(frozen=True)
class RunSettings:
    """How a run is executed; none of these change what is learned, except ``amp`` (numerics)."""

    device: str = "auto"
    amp: str = "none"
    compile: bool = False
    data_dir: str | None = None
    embeddings: str | None = None
    out: str = "runs"
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None  # None: on when standard error is a terminal
    attention: str = "primitive"

    def validate(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("limit_train_batches", "limit_eval_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of batches, got {value}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: pick one")


def _lstm(number: int, optimizer: str, layers: int = 1) -> Experiment:
    return Experiment(f"lstm-{number}", "lstm", optimizer, lr=1e-3, batch_size=16, num_layers=layers)


def _vit(number: int, optimizer: str, layers: int = 2, block: str = "prenorm") -> Experiment:
    return Experiment(f"vit-{number}", "vit", optimizer, lr=3e-4, batch_size=128, num_layers=layers, block=block)


def _cnn(name: str, optimizer: str, lr: float) -> Experiment:
    return Experiment(
        f"cnn-{name}", "cnn", optimizer, lr=lr, batch_size=128, epochs=180, weight_decay=1e-4,
        lr_milestones=(100, 150), architecture=name,
    )


EXPERIMENTS: dict[str, Experiment] = {
    e.id: e
    for e in [
        _lstm(1, "adam"),
        _lstm(2, "adamw"),
        _lstm(3, "sgd"),
        _lstm(4, "momentum"),
        _lstm(5, "adamw", layers=2),
        _lstm(6, "adamw", layers=4),
        _vit(1, "adam"),
        _vit(2, "adamw"),
        _vit(3, "sgd"),
        _vit(4, "momentum"),
        _vit(5, "adamw", layers=4),
        _vit(6, "adamw", layers=6),
        _vit(7, "adamw", layers=6, block="postnorm"),
        _cnn("googlenet", "adamw", 1e-3),
        _cnn("resnet", "momentum", 0.1),
        _cnn("resnetpreact", "momentum", 0.1),
        _cnn("densenet", "adamw", 1e-3),
    ]
}

GRIDS: dict[str, list[str]] = {
    "lstm": [k for k, e in EXPERIMENTS.items() if e.task == "lstm"],
    "vit": [k for k, e in EXPERIMENTS.items() if e.task == "vit"],
    "cnn": [k for k, e in EXPERIMENTS.items() if e.task == "cnn"],
}
GRIDS["all"] = GRIDS["lstm"] + GRIDS["vit"]


def get_experiment(experiment_id: str) -> Experiment:
    try:
        return EXPERIMENTS[experiment_id]
    except KeyError:
        raise KeyError(
            f"unknown experiment {experiment_id!r}; choose one of {', '.join(EXPERIMENTS)} (see `replab configs`)"
        ) from None


def with_overrides(experiment: Experiment, **overrides: Any) -> Experiment:
    """The registry's experiment with the given fields replaced (``None`` values are ignored), then resolved.

    Pass the unresolved registry entry: where it leaves weight decay or momentum to the optimizer's rule, changing
    the optimizer re-applies the rule for the new one.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(Experiment)}
    if unknown:
        raise ValueError(f"unknown override(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(experiment, **changes).resolved()
