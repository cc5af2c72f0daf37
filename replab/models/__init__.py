"""Models of the study: the ViT (from primitives), the LSTM language model and the CNN baselines.

``MODELS`` is the one registry of models: a name (what an experiment and its ``config.json`` record, as ``task``)
-> ``ModelSpec``: the model's config dataclass (its hyperparameters, defaults there), how to build it from one, and
the kind of task it is trained for (``TaskKind``: its metric, whether higher is better, what throughput counts),
which the trainer records and the report reads. Adding a model: its file in this folder (the module, a frozen
config dataclass, a builder ``build(config, **run_options)``) and one entry below; then its experiments in
``replab.experiments``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from replab.models.cnn import CNNConfig, cnn_from_config
from replab.models.lstm import LSTM, LSTMConfig
from replab.models.vit import VisionTransformer, ViTConfig


@dataclass(frozen=True)
class TaskKind:
    """What a model is trained for and how it is scored: ``metric`` (the score of the specification, recorded in
    every epoch line as ``train_<metric>``/``val_<metric>``), whether a higher score is better, and ``unit``, what
    throughput counts. ``replab.tasks`` trains each kind; the report reads these three from here."""

    name: str
    metric: str
    higher_is_better: bool
    unit: str


#: Wikitext-2 (``replab.tasks.LanguageModelingTask``): perplexity, lower is better, tokens per second.
LANGUAGE_MODELING = TaskKind("language_modeling", "perplexity", higher_is_better=False, unit="tokens")
#: CIFAR-10 (``replab.tasks.ImageClassificationTask``): accuracy, higher is better, images per second.
IMAGE_CLASSIFICATION = TaskKind("image_classification", "accuracy", higher_is_better=True, unit="images")


@dataclass(frozen=True)
class ModelSpec:
    """A model of the registry.

    ``build(config, **run_options)`` returns the model: the language-modelling task passes ``vocabulary_size`` and
    ``embeddings_file``, the image task ``attention``; a builder ignores what does not concern it. ``task``: the
    ``TaskKind`` the model is trained for.
    ``variant``: the config field that tells the model's variants apart in the report's tables (its
    "architecture"), if any. ``channels_last``: model and images in channels-last memory format.
    ``bf16_needs_cpu_instructions``: bf16 autocast on a CPU without bf16 instructions is refused (oneDNN has no
    emulated kernel for it).
    """

    name: str
    config: type
    build: Callable[..., nn.Module]
    task: TaskKind
    variant: str | None = None
    channels_last: bool = False
    bf16_needs_cpu_instructions: bool = False

    def options(self) -> tuple[str, ...]:
        """The hyperparameters an experiment of this model sets: its config's fields, less those whose metadata
        says ``option: False`` (set by the data or the run, such as the ViT's ``num_classes``, ``attention``)."""
        return tuple(f.name for f in dataclasses.fields(self.config) if f.metadata.get("option", True))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("lstm", LSTMConfig, LSTM.from_config, LANGUAGE_MODELING, bf16_needs_cpu_instructions=True),
        ModelSpec("vit", ViTConfig, VisionTransformer.from_config, IMAGE_CLASSIFICATION, variant="block"),
        ModelSpec("cnn", CNNConfig, cnn_from_config, IMAGE_CLASSIFICATION, variant="architecture", channels_last=True),
    ]
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def config_problems(config: Any) -> list[str]:
    """What is wrong with a model config: integers must be positive, floats >= 0, and a field with ``choices`` in
    its metadata one of them."""
    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            problems.append(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            continue
        elif isinstance(value, int) and value <= 0:
            problems.append(f"{f.name} must be positive, got {value}")
        elif value < 0:
            problems.append(f"{f.name} must be >= 0, got {value}")
    return problems
