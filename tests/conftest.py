"""Shared fixtures: the real data folder, and a way to disable built-ins the specification forbids."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

import pytest
import torch

# The built-ins the specification disables in its grader, by (module path, attribute name).
FORBIDDEN = [
    ("torch.nn.LayerNorm", None),
    ("torch.nn.functional", "layer_norm"),
    ("torch", "layer_norm"),
    ("torch.nn.MultiheadAttention", None),
    ("torch.nn.functional", "multi_head_attention_forward"),
    ("torch.nn.functional", "scaled_dot_product_attention"),
]


def _raiser(name):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"forbidden built-in called: {name}")

    return forbidden


@contextlib.contextmanager
def forbidden_builtins():
    """Patch every forbidden built-in to raise, as the specification's grader does."""
    mp = pytest.MonkeyPatch()
    try:
        for target, attr in FORBIDDEN:
            if attr is None:
                module_name, _, cls_name = target.rpartition(".")
                module = importlib.import_module(module_name)
                mp.setattr(module, cls_name, _raiser(target))
            else:
                mp.setattr(importlib.import_module(target), attr, _raiser(f"{target}.{attr}"))
        yield
    finally:
        mp.undo()


# The ViT's state-dict key prefixes before the blocks and the head took the specification's names (replab before
# issue 27: ``self.transformer`` an nn.Sequential of blocks, ``self.mlp_head`` = Sequential(LayerNorm, Linear)).
VIT_OLD_KEY_PREFIXES = {"layers.": "transformer.", "norm.": "mlp_head.0.", "classifier.": "mlp_head.1."}


def with_old_vit_names(state_dict: dict) -> dict:
    """A ViT state dict (or a checkpoint's ``model``) with the keys replab wrote before the renaming."""
    renamed = {}
    for key, value in state_dict.items():
        new = next((n for n in VIT_OLD_KEY_PREFIXES if key.startswith(n)), None)
        renamed[key if new is None else VIT_OLD_KEY_PREFIXES[new] + key[len(new):]] = value
    return renamed


@pytest.fixture
def no_forbidden_builtins():
    with forbidden_builtins():
        yield


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder (``REPLAB_DATA``). Skips where it is absent, fails in CI (``REPLAB_REQUIRE_DATA=1``)."""
    root = Path(os.environ.get("REPLAB_DATA", "../shared/data"))
    if not (root / "wikitext2").is_dir() or not (root / "cifar10").is_dir():
        message = f"real data not found under {root!s} (set REPLAB_DATA to the shared data folder)"
        if os.environ.get("REPLAB_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def gpt1_tokenizer(data_root):
    """GPT-1's tokenizer from the real data folder's ``gpt1-bpe/`` (skips, or fails in CI, like ``data_root``)."""
    from replab.text import GPT1Tokenizer

    try:
        return GPT1Tokenizer.from_data_dir(data_root)
    except FileNotFoundError as error:
        if os.environ.get("REPLAB_REQUIRE_DATA") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
