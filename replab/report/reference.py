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


# The specification's reference CNNs (Problem 3, question 6), by architecture: name, validation %, test %,
# parameters.
CNN_REFERENCE = {
    name: (display(name), val, test, parameters)
    for name, val, test, parameters in [
        ("googlenet", 90.40, 89.70, 260_650),
        ("resnet", 91.84, 91.06, 272_378),
        ("resnetpreact", 91.80, 91.07, 272_250),
        ("densenet", 90.72, 90.23, 239_146),
    ]
}
