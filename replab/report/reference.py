"""What the report names and what it compares with, in one place: display names, grid titles and the
specification's reference numbers."""

from __future__ import annotations

# How the report writes the registry's names: models, their variants (ViT blocks, CNN architectures), optimizers.
DISPLAY_NAMES = {
    "lstm": "LSTM", "vit": "ViT", "cnn": "CNN",
    "prenorm": "PreNorm", "postnorm": "PostNorm",
    "googlenet": "GoogleNet", "resnet": "ResNet", "resnetpreact": "ResNetPreAct", "densenet": "DenseNet",
    "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "momentum": "SGD+momentum",
}

# Each grid (named after its model in replab.experiments.GRIDS): its title in headings and captions.
GRID_TITLES = {"lstm": "LSTM on Wikitext-2", "vit": "ViT on CIFAR-10", "cnn": "CNNs on CIFAR-10"}


def display(name: str | None) -> str:
    """The report's name for a registry name (``adamw`` -> ``AdamW``); unknown names as they are."""
    return DISPLAY_NAMES.get(name, str(name))


# Where each grid's settings come from: the specification's runner scripts, except for the CNN baselines, whose
# settings (180 epochs, learning-rate steps at 100 and 150) are those of the reference training that produced the
# specification's CNN table (the tutorial it comes from); the specification itself gives only the table.
SETTING_SOURCES = {"lstm": "spec", "vit": "spec", "cnn": "reference training"}

# The questions the report answers, in the specification's order: (problem, question, title). Each is a section of
# the report, and the heading ``## Problem P QN`` of the written discussion (``replab.report.discussion``).
QUESTIONS = (
    (1, 3, "learning curves"),
    (1, 4, "which configuration for wall-clock time, which for generalization"),
    (2, 5, "learnable parameters of the multi-head attention"),
    (3, 1, "learning curves over epochs and wall-clock time"),
    (3, 2, "table of results"),
    (3, 3, "which configuration for wall-clock time, which for generalization"),
    (3, 4, "configurations 1-4: the optimizers"),
    (3, 5, "PreNorm against PostNorm"),
    (3, 6, "against the CNNs"),
    (3, 7, "memory"),
    (3, 8, "overfitting"),
)
PROBLEM_TITLES = {1: "LSTM language model on Wikitext-2", 2: "the Vision Transformer's attention",
                  3: "Vision Transformers on CIFAR-10"}


def question_name(problem: int, question: int) -> str:
    """``Problem 3 Q5``: how the report and the discussion name a question."""
    return f"Problem {problem} Q{question}"


# The specification's reference CNNs (Problem 3, question 6), by architecture: name, validation %, test %,
# parameters. They come from the reference training (180 epochs), whose validation set is its own 5,000 training
# images (disjoint from its training images: the tutorial reseeds before each random_split), not ours.
CNN_REFERENCE = {
    name: (display(name), val, test, parameters)
    for name, val, test, parameters in [
        ("googlenet", 90.40, 89.70, 260_650),
        ("resnet", 91.84, 91.06, 272_378),
        ("resnetpreact", 91.80, 91.07, 272_250),
        ("densenet", 90.72, 90.23, 239_146),
    ]
}
