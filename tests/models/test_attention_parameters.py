"""Problem 2 Q5: ``MultiHeadedAttention`` has 4 (m d)^2 + 4 m d learnable parameters for m heads of size d, the
formula the report gives (``replab.report.attention``)."""

from __future__ import annotations

import pytest
from torch import nn

from replab.models.vit import MultiHeadedAttention, VisionTransformer, ViTConfig
from replab.report.attention import attention_parameters, attention_table, counted_parameters, specification_heads


def learnable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("num_heads, head_size", [(1, 1), (1, 7), (2, 3), (4, 16), (8, 32), (3, 5), (16, 8)])
@pytest.mark.parametrize("sequence_length", [1, 65])
def test_the_formula_is_the_modules_count(num_heads, head_size, sequence_length):
    module = MultiHeadedAttention(head_size=head_size, num_heads=num_heads, sequence_length=sequence_length)
    assert attention_parameters(num_heads, head_size) == learnable(module)
    # PyTorch's own multi-head attention (in-projections with biases, output projection) as the oracle
    width = num_heads * head_size
    assert attention_parameters(num_heads, head_size) == learnable(nn.MultiheadAttention(width, num_heads))
    assert sum(counted_parameters(num_heads, head_size)) == learnable(module)


def test_only_the_width_counts():
    """m and d enter only through their product: 8 heads of 32 and 4 heads of 64 have as many parameters."""
    assert attention_parameters(8, 32) == attention_parameters(4, 64) == attention_parameters(1, 256)
    assert attention_parameters(8, 32) != attention_parameters(8, 16)


def test_the_value_for_the_specifications_vit():
    config = ViTConfig()
    m, d = specification_heads()
    assert (m, d) == (config.num_heads, config.embed_dim // config.num_heads)
    width = config.embed_dim
    assert attention_parameters(m, d) == 4 * width**2 + 4 * width
    model = VisionTransformer(num_layers=2)
    attention = [module for module in model.modules() if isinstance(module, MultiHeadedAttention)]
    assert len(attention) == 2 and all(learnable(a) == attention_parameters(m, d) for a in attention)
    table = attention_table()
    total, counted = table.rows[-2], table.rows[-1]
    assert total[-1] == counted[-1] == f"{attention_parameters(m, d):,}"
    assert counted[1:3] == [f"{4 * width**2:,}", f"{4 * width:,}"]  # four weight matrices, four biases
