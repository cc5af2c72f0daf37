"""Problem 2 Q5: the learnable parameters of ``MultiHeadedAttention`` as a function of ``num_heads`` (m) and
``head_size`` (d), with the value for the specification's ViT, checked against the module's own count.

The queries, keys and values are each projected by an (m d × m d) matrix with a bias of m d (W_Q, b_Q; W_K, b_K;
W_V, b_V), and the concatenated heads by W_O (m d × m d) with b_O: ``4 (m d)^2 + 4 m d`` in all.
"""

from __future__ import annotations

from replab.models.vit import MultiHeadedAttention, ViTConfig
from replab.report.formatting import fmt_count
from replab.report.study import Study
from replab.report.tables import Table

FORMULA = "4 (md)² + 4 md"
PROJECTIONS = ("queries: W_Q, b_Q", "keys: W_K, b_K", "values: W_V, b_V", "output: W_O, b_O")


def attention_parameters(num_heads: int, head_size: int) -> int:
    """``4 (m d)^2 + 4 m d``: four (m d × m d) weight matrices and four biases of m d."""
    width = num_heads * head_size
    return 4 * width**2 + 4 * width


def counted_parameters(num_heads: int, head_size: int) -> tuple[int, int]:
    """(weights, biases): the learnable parameters of a ``MultiHeadedAttention(head_size, num_heads, ...)``, as the
    module holds them (matrices, vectors)."""
    module = MultiHeadedAttention(head_size=head_size, num_heads=num_heads, sequence_length=1)
    learnable = [p for p in module.parameters() if p.requires_grad]
    return sum(p.numel() for p in learnable if p.dim() > 1), sum(p.numel() for p in learnable if p.dim() == 1)


def specification_heads() -> tuple[int, int]:
    """(m, d) of the specification's ViT (``ViTConfig``'s defaults): ``num_heads`` heads of ``embed_dim /
    num_heads``."""
    config = ViTConfig()
    return config.num_heads, config.embed_dim // config.num_heads


def attention_table() -> Table:
    """The formula term by term for the specification's ViT, and the module's own count."""
    m, d = specification_heads()
    width = m * d
    rows = [[name, f"{width} × {width} = {width**2:,}", f"{width:,}", f"{width**2 + width:,}"] for name in PROJECTIONS]
    rows.append([f"total, {FORMULA}", f"{4 * width**2:,}", f"{4 * width:,}", f"{attention_parameters(m, d):,}"])
    weights, biases = counted_parameters(m, d)
    rows.append([f"counted in MultiHeadedAttention(head_size={d}, num_heads={m})", f"{weights:,}", f"{biases:,}",
                 f"{weights + biases:,}"])
    caption = (f"Learnable parameters of the multi-head attention with m = {m} heads of size d = {d} (md = {width}), "
               "the specification's ViT, projection by projection. The last row counts the parameters of the module "
               "itself, whose three input projections are one fused (md × 3 md) linear layer.")
    return Table("attention-parameters", "Attention parameters", caption,
                 ["Projection", "Weights", "Biases", "Parameters"], rows)


def attention_share(study: Study) -> list[str]:
    """How much of each ViT the attention holds: one line per depth among the runs (their recorded parameters)."""
    m, d = specification_heads()
    per_layer = attention_parameters(m, d)
    by_depth = {run.layers: run.parameters for run in study.grid("vit") if run.layers and run.parameters}
    return [f"{layers} layers: {layers} × {per_layer:,} = {layers * per_layer:,} of the model's "
            f"{fmt_count(total)} parameters ({layers * per_layer / total:.1%})"
            for layers, total in sorted(by_depth.items())]
