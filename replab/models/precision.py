"""The dtype a from-primitives block computes in: float64 stays float64, everything narrower goes to float32.

Reductions (normalisation statistics, softmax sums, the loss) of bf16/fp16 inputs run in float32, as PyTorch's
autocast does for its built-ins; float32 and float64 inputs compute in their own dtype, so a float64 model is a
float64 model end to end (``torch.autograd.gradcheck`` needs that).
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """``torch.promote_types(dtype, float32)``: float32 for bf16, fp16 and float32; float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (any shape) in its compute dtype, same shape; the tensor itself (no copy) when already there."""
    return tensor.to(compute_dtype(tensor.dtype))
