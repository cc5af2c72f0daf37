"""The one registry of experiments: the specification's 13 configurations and the CNN baselines, as dataclasses.

An ``Experiment`` says *what* is trained (model, optimizer, schedule); ``RunSettings`` says *how* this run is
executed (device, precision, data folder, limits). Both are recorded in full in every run's ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from replab.models import MODELS, ModelSpec, config_problems, get_model
from replab.models.cnn import CNNConfig
from replab.models.lstm import LSTMConfig
from replab.models.vit import BLOCKS as VIT_BLOCKS
from replab.models.vit import ViTConfig

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
BLOCKS = tuple(VIT_BLOCKS)
AMP_MODES = ("none", "bf16", "fp16")
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_MOMENTUM = 0.9
# The command line's names of the model options it can override (the others are only set in the registry below).
OPTION_FLAGS = {"num_layers": "--layers", "block": "--block"}


@dataclass(frozen=True)
class Experiment:
    """One configuration of the study: a model of ``replab.models.MODELS`` with its config, and the optimisation.

    ``weight_decay``/``momentum`` of ``None`` mean "the optimizer's rule": weight decay 5e-4 where the optimizer
    takes it (not ``adam``), momentum 0.9 for ``momentum`` only.
    """

    id: str
    model: str  # a name of replab.models.MODELS ("lstm", "vit", "cnn"); recorded as "task" in config.json
    config: Any  # the model's config (LSTMConfig, ViTConfig, CNNConfig...)
    optimizer: str
    lr: float
    batch_size: int
    epochs: int = 10
    seed: int = 42
    weight_decay: float | None = None
    momentum: float | None = None
    lr_milestones: tuple[int, ...] = ()  # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1

    @property
    def spec(self) -> ModelSpec:
        return get_model(self.model)

    @property
    def is_resolved(self) -> bool:
        """Whether weight decay and momentum are set (``resolved``), as the trainer takes them."""
        return self.weight_decay is not None and self.momentum is not None

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
        if self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        elif not isinstance(self.config, self.spec.config):
            problems.append(f"the {self.model} model takes a {self.spec.config.__name__}, got "
                            f"{type(self.config).__name__}")
        else:
            problems += config_problems(self.config)
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("lr", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "momentum"):
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
        """The flat record of ``config.json`` (and of the checkpoints, and ``replab configs --json``), as it has
        always been: id, the model's name under ``task``, the optimisation, ``num_layers`` among them where the
        model has layers, then the model's other hyperparameters."""
        config = {name: getattr(self.config, name) for name in self.spec.options()}
        layers = {"num_layers": config.pop("num_layers")} if "num_layers" in config else {}
        return {
            "id": self.id, "task": self.model, "optimizer": self.optimizer, "lr": self.lr,
            "batch_size": self.batch_size, "epochs": self.epochs, "seed": self.seed, **layers,
            "weight_decay": self.weight_decay, "momentum": self.momentum, "lr_milestones": self.lr_milestones,
            "lr_gamma": self.lr_gamma, **config,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Experiment:
        """The experiment of a ``to_dict`` record, also one written by earlier versions (keys that the model does
        not have, such as a CNN's ``num_layers``, are ignored; missing model fields take the config's default)."""
        spec = get_model(record.get("model") or record["task"])
        config = spec.config(**{k: record[k] for k in spec.options() if k in record})
        schedule = {name: record[name] for name in SCHEDULE_FIELDS if name in record}
        schedule["lr_milestones"] = tuple(schedule.get("lr_milestones", ()))
        return cls(record["id"], spec.name, config, **schedule)


# The fields of an experiment besides what is trained (id, model, config): the optimisation and its schedule.
SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(Experiment) if f.name not in ("id", "model", "config"))


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
    checkpoint_minutes: float = 10.0  # also checkpoint inside an epoch about this often (0: at epoch ends only)
    keep_checkpoints: bool = False  # a completed run keeps last.pt/previous.pt too (see replab.checkpoints)

    def __post_init__(self):
        self.validate()  # settings are checked once, when made: what exists is valid

    def validate(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("limit_train_batches", "limit_eval_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of batches, got {value}")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"--checkpoint-minutes must be 0 (at epoch ends only) or more, got "
                             f"{self.checkpoint_minutes}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: pick one")


def _lstm(number: int, optimizer: str, layers: int = 1) -> Experiment:
    return Experiment(f"lstm-{number}", "lstm", LSTMConfig(num_layers=layers), optimizer, lr=1e-3, batch_size=16)


def _vit(number: int, optimizer: str, layers: int = 2, block: str = "prenorm") -> Experiment:
    return Experiment(f"vit-{number}", "vit", ViTConfig(num_layers=layers, block=block), optimizer, lr=3e-4,
                      batch_size=128)


def _cnn(name: str, optimizer: str, lr: float) -> Experiment:
    return Experiment(
        f"cnn-{name}", "cnn", CNNConfig(name), optimizer, lr=lr, batch_size=128, epochs=180, weight_decay=1e-4,
        lr_milestones=(100, 150),
    )


# The specification's grids, as its tables give them: (number, optimizer, layers[, block]); the CNN baselines:
# (architecture, optimizer, learning rate), trained as the reference training of the specification's CNN table
# (180 epochs, steps at 100 and 150: the tutorial the table comes from; the specification gives only the table).
LSTM_GRID = [(1, "adam", 1), (2, "adamw", 1), (3, "sgd", 1), (4, "momentum", 1), (5, "adamw", 2), (6, "adamw", 4)]
VIT_GRID = [(1, "adam", 2), (2, "adamw", 2), (3, "sgd", 2), (4, "momentum", 2), (5, "adamw", 4), (6, "adamw", 6),
            (7, "adamw", 6, "postnorm")]
CNN_BASELINES = [("googlenet", "adamw", 1e-3), ("resnet", "momentum", 0.1), ("resnetpreact", "momentum", 0.1),
                 ("densenet", "adamw", 1e-3)]

EXPERIMENTS: dict[str, Experiment] = {
    e.id: e
    for e in [*(_lstm(*row) for row in LSTM_GRID), *(_vit(*row) for row in VIT_GRID),
              *(_cnn(*row) for row in CNN_BASELINES)]
}

# One grid per model, named after it, in registry order; "all": the specification's two grids.
GRIDS: dict[str, list[str]] = {name: [k for k, e in EXPERIMENTS.items() if e.model == name] for name in MODELS}
GRIDS["all"] = GRIDS["lstm"] + GRIDS["vit"]


def get_experiment(experiment_id: str) -> Experiment:
    try:
        return EXPERIMENTS[experiment_id]
    except KeyError:
        raise KeyError(
            f"unknown experiment {experiment_id!r}; choose one of {', '.join(EXPERIMENTS)} (see `replab configs`)"
        ) from None


def configure(experiment_id: str, **overrides: Any) -> Experiment:
    """The experiment the trainer takes: the registry's ``experiment_id`` with ``overrides`` (hyperparameters,
    ``None`` values ignored), resolved and validated once (``with_overrides``). The command line and the API both
    make their experiments here; ``replab.train`` takes them as they are. ValueError naming the problem (an unknown
    id included)."""
    try:
        experiment = get_experiment(experiment_id)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return with_overrides(experiment, **overrides)


def _flag(name: str) -> str:
    """The command line's name of a model option (``--layers``), else the option's own name."""
    return OPTION_FLAGS.get(name, name)


def _model_options_text(experiment: Experiment) -> str:
    """Which model options of the experiment the command line sets, as the flags a user types."""
    flags = [OPTION_FLAGS[name] for name in experiment.spec.options() if name in OPTION_FLAGS]
    if flags:
        return f"of the model options, it takes {', '.join(flags)}"
    return f"it takes none of the model options ({', '.join(OPTION_FLAGS.values())}): the experiment id fixes its model"


def with_overrides(experiment: Experiment, **overrides: Any) -> Experiment:
    """The registry's experiment with the given fields replaced (``None`` values are ignored), then resolved.

    Overrides are fields of ``Experiment`` (the optimisation) or of the model's config; one the model does not
    have raises ValueError naming the model's options. Pass the unresolved registry entry: where it leaves weight
    decay or momentum to the optimizer's rule, changing the optimizer re-applies the rule for the new one.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    schedule = SCHEDULE_FIELDS
    options = experiment.spec.options()
    unknown = [k for k in changes if k not in schedule and k not in options]
    if unknown:
        raise ValueError(f"{experiment.id}: the {experiment.model} model has no {', '.join(map(_flag, unknown))}; "
                         + _model_options_text(experiment))
    config = dataclasses.replace(experiment.config, **{k: v for k, v in changes.items() if k in options})
    changes = {k: v for k, v in changes.items() if k in schedule}
    return dataclasses.replace(experiment, config=config, **changes).resolved()
