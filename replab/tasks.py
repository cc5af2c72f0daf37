"""What differs between the study's tasks, behind one small interface the trainer calls.

A task builds its model, holds its data as tensors, yields training and evaluation batches (sharded across
ranks when distributed), computes the loss and the statistics of a batch, and turns summed statistics into the
scores of the specification: perplexity for language modelling, accuracy for image classification.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from replab.data import shard
from replab.data.cifar10 import load_cifar10
from replab.data.embeddings import EMBEDDINGS_FILE
from replab.data.image_batches import ImageBatches
from replab.data.wikitext2 import Wikitext2
from replab.experiments import Experiment, RunSettings
from replab.models import IMAGE_CLASSIFICATION, LANGUAGE_MODELING, TaskKind
from replab.run_sample import keep_sample
from replab.runlog import RunDir

log = logging.getLogger("replab.tasks")
#: ``--embeddings none``: learned embeddings even where the data folder holds ``embeddings.npz``.
LEARNED_EMBEDDINGS = "none"


class Task:
    """The interface the trainer uses. Statistics are sums (tensors on the device) so ranks can add them up.

    ``kind``: the ``TaskKind`` of the model registry this task trains; its ``metric``, ``higher_is_better`` and
    ``unit`` (what throughput counts) are the task's.
    """

    kind: TaskKind

    @property
    def metric(self) -> str:
        return self.kind.metric

    @property
    def higher_is_better(self) -> bool:
        return self.kind.higher_is_better

    @property
    def unit(self) -> str:
        return self.kind.unit

    def __init__(self, experiment: Experiment, settings: RunSettings, data_dir: Path, device: torch.device):
        self.experiment = experiment
        self.settings = settings
        self.data_dir = data_dir
        self.device = device

    def build_model(self) -> nn.Module:
        """The experiment's model, from its registry entry (``replab.models.MODELS``)."""
        raise NotImplementedError

    def train_batches(self, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator:
        raise NotImplementedError

    def num_train_batches(self) -> int:
        raise NotImplementedError

    def eval_batches(self, split: str, rank: int = 0, world_size: int = 1) -> Iterator:
        raise NotImplementedError

    def num_eval_batches(self, split: str) -> int:
        """Batches in one evaluation pass over ``split`` (``valid`` or ``test``), one process."""
        raise NotImplementedError

    def step(self, objective: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss to minimise and the batch's summed statistics (``loss_sum``, ``count``, ``items``...)."""
        raise NotImplementedError

    def scores(self, totals: dict[str, float]) -> dict[str, float]:
        """``{"loss": ..., self.metric: ...}`` from statistics summed over an epoch (and over ranks)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Task facts recorded in ``config.json``."""
        return {}

    def keep_with_best(self, run: RunDir, epoch: int) -> None:
        """Files the run keeps beside its ``best.pt`` (of ``epoch``), written by rank 0 once it is saved: none here."""


class LanguageModelingTask(Task):
    """LSTM on Wikitext-2. Loss: the spec's per-sequence mean NLL; score: perplexity over all predicted tokens."""

    kind = LANGUAGE_MODELING
    splits = {"train": "train", "valid": "validation", "test": "test"}

    def __init__(self, experiment, settings, data_dir, device):
        super().__init__(experiment, settings, data_dir, device)
        self.data = {name: Wikitext2(data_dir, split=split) for name, split in self.splits.items()}
        self.embeddings_file = self._embeddings_file()

    def _embeddings_file(self) -> str | None:
        """The pretrained embeddings this run uses (the path as given), None for learned ones: ``--embeddings``
        (``none``: learned); on ``--resume``, what the run started with; else ``<data dir>/embeddings.npz`` if
        present, else learned, with a warning (that is not the specification's model). A chosen file that does
        not exist raises FileNotFoundError."""
        chosen = self.settings.embeddings
        if not chosen and self.settings.resume:
            recorded = (RunDir(Path(self.settings.out) / self.experiment.id).read_config() or {}).get("task", {})
            if "embeddings_file" in recorded:
                chosen = recorded["embeddings_file"] or LEARNED_EMBEDDINGS
        if chosen and chosen.lower() == LEARNED_EMBEDDINGS:
            return None
        if chosen and not Path(chosen).is_file():
            raise FileNotFoundError(f"embeddings file not found: {chosen} (get GPT-1's with `replab data download "
                                    "--embeddings`, or pass --embeddings none to learn them)")
        if chosen:
            return chosen
        default = Path(self.data_dir) / EMBEDDINGS_FILE
        if default.is_file():
            return str(default)
        log.warning("no %s: the LSTM learns its embeddings, which is not the specification's model (frozen GPT-1 "
                    "embeddings); get them with `replab data download --embeddings`", default)
        return None

    def build_model(self) -> nn.Module:
        e = self.experiment
        model = e.spec.build(e.config, vocabulary_size=Wikitext2.vocabulary_size, embeddings_file=self.embeddings_file)
        if self.embeddings_file:
            learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log.info("embeddings: %s, frozen and tied to the output layer; %s learnable parameters of %s",
                     self.embeddings_file, f"{learnable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
        return model

    def describe(self) -> dict:
        if self.embeddings_file:
            return {"embeddings": "pretrained GPT-1 (frozen, tied to the output layer)",
                    "embeddings_file": self.embeddings_file}
        return {"embeddings": "learned, initialised N(0, 0.02) (no embeddings file given)", "embeddings_file": None}

    def keep_with_best(self, run: RunDir, epoch: int) -> None:
        """The text sample of ``best.pt``, ``sample.json`` (``replab.run_sample``)."""
        keep_sample(run.path, self.data_dir, epoch)

    def _batches(self, dataset: Wikitext2, order: torch.Tensor, rank: int, world_size: int):
        batch_size = self.experiment.batch_size
        for start in range(0, len(order), batch_size):
            batch = dataset.get_batch(shard(order[start : start + batch_size], rank, world_size))
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def num_train_batches(self) -> int:
        return math.ceil(len(self.data["train"]) / self.experiment.batch_size)

    def num_eval_batches(self, split: str) -> int:
        return math.ceil(len(self.data[split]) / self.experiment.batch_size)

    def train_batches(self, generator, rank=0, world_size=1):
        order = torch.randperm(len(self.data["train"]), generator=generator)
        return self._batches(self.data["train"], order, rank, world_size)

    def eval_batches(self, split, rank=0, world_size=1):
        dataset = self.data[split]
        return self._batches(dataset, torch.arange(len(dataset)), rank, world_size)

    def step(self, objective, batch):
        """The model's forward with targets (fused output layer and loss, see ``LSTM.forward``), every sequence
        from zero hidden states: the specification's loss (``LSTM.loss``: per-sequence mean NLL, then the mean
        over sequences) and the NLL of each target token, summed for the perplexity."""
        mask = batch["mask"]
        loss, nll = objective(batch["source"], targets=batch["target"], mask=mask)
        stats = {"loss_sum": nll.sum(), "count": mask.sum(), "items": mask.sum()}  # nll: 0 where masked, no grad
        return loss, stats

    def scores(self, totals):
        mean_nll = totals["loss_sum"] / max(totals["count"], 1.0)
        return {"loss": mean_nll, "perplexity": math.exp(min(mean_nll, 700.0))}


class ImageClassificationTask(Task):
    """ViT or CNN on CIFAR-10 (45k/5k/10k split), whole splits kept on the device, augmentation in batches."""

    kind = IMAGE_CLASSIFICATION

    def __init__(self, experiment, settings, data_dir, device):
        super().__init__(experiment, settings, data_dir, device)
        splits = load_cifar10(data_dir, seed=experiment.seed)
        self.splits = {name: getattr(splits, name).to(device) for name in ("train", "valid", "test")}
        self.channels_last = experiment.spec.channels_last
        self.loss = None  # the model's own loss (``model.loss``), set by build_model

    def build_model(self) -> nn.Module:
        e = self.experiment
        model = e.spec.build(e.config, attention=self.settings.attention)
        self.loss = model.loss
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _batches(self, split, shuffle, generator=None, rank=0, world_size=1):
        batches = ImageBatches(
            self.splits[split], self.experiment.batch_size, shuffle=shuffle, augment=shuffle,
            generator=generator, rank=rank, world_size=world_size,
        )
        for images, labels in batches:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels

    def num_train_batches(self) -> int:
        return math.ceil(len(self.splits["train"]) / self.experiment.batch_size)

    def num_eval_batches(self, split: str) -> int:
        return math.ceil(len(self.splits[split]) / self.experiment.batch_size)

    def train_batches(self, generator, rank=0, world_size=1):
        return self._batches("train", True, generator, rank, world_size)

    def eval_batches(self, split, rank=0, world_size=1):
        return self._batches(split, False, torch.Generator().manual_seed(0), rank, world_size)

    def step(self, objective, batch):
        images, labels = batch
        logits = objective(images)
        loss = self.loss(logits, labels)
        count = torch.tensor(float(labels.numel()), device=labels.device)
        stats = {
            "loss_sum": loss.detach() * count,
            "correct": (logits.detach().argmax(-1) == labels).sum().float(),
            "count": count,
            "items": count,
        }
        return loss, stats

    def scores(self, totals):
        count = max(totals["count"], 1.0)
        return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


TASKS: dict[TaskKind, type[Task]] = {task.kind: task for task in (LanguageModelingTask, ImageClassificationTask)}


def make_task(experiment: Experiment, settings: RunSettings, data_dir: Path, device: torch.device) -> Task:
    """The task that trains the experiment's model (its registry entry's ``task``)."""
    return TASKS[experiment.spec.task](experiment, settings, data_dir, device)
