"""Vision Transformer of the specification (Problem 2), every core block from tensor primitives.

``LayerNorm`` and ``MultiHeadedAttention`` are written with matrix products, reductions and a softmax only: no
``nn.LayerNorm``/``F.layer_norm``/``torch.layer_norm``, no ``nn.MultiheadAttention``,
``F.multi_head_attention_forward`` or ``F.scaled_dot_product_attention`` on the default path. The one fused
shortcut, ``attention="sdpa"``, is an explicit opt-in that is tested numerically equal to the default.

Shapes: B batch, T sequence length (1 + number of patches), E = num_heads * head_size embedding size,
H heads, D head size, C channels, p patch size, N patches.

Precision: each block computes its reductions (LayerNorm statistics, the attention softmax, the loss) in
``torch.promote_types(input dtype, float32)`` (``replab.models.precision``): float32 for bf16, fp16 and float32
inputs, float64 for float64 ones; the blocks' outputs keep the input's dtype, the loss is in the compute dtype.
A float64 model is float64 end to end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from replab.models.precision import compute_dtype, upcast

ATTENTION_IMPLEMENTATIONS = ("primitive", "sdpa")


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension, with the biased variance (as in Ba et al., 2016).

    ``layernorm(x) = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, where ``Var`` divides by n, not n - 1.
    Statistics are computed in float32 for bf16/fp16/float32 inputs and in float64 for float64 ones; the output
    has the input's dtype.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(*dims, hidden_size) -> (*dims, hidden_size)."""
        if inputs.shape[-1] != self.hidden_size:
            raise ValueError(f"LayerNorm expects a last dimension of {self.hidden_size}, got {tuple(inputs.shape)}")
        return _LayerNormFunction.apply(inputs, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class _LayerNormFunction(torch.autograd.Function):
    """Layer normalisation with a hand-written backward, from reductions and element-wise products only.

    Forward: ``mean`` of each row, ``r = 1 / sqrt(|x - mean|^2 / n + eps)`` (the biased variance),
    ``x_hat = (x - mean) r``, ``y = x_hat * weight + bias`` (statistics and ``x_hat`` in the compute dtype:
    float32, or float64 for float64 inputs; ``y`` in the input's dtype). Backward, in the same compute dtype, with
    ``dy`` the incoming gradient and ``n`` the width:
    ``dx = r (dy * weight - mean(dy * weight) - x_hat mean(dy * weight * x_hat))``, ``dweight = sum(dy x_hat)``,
    ``dbias = sum(dy)`` over every row; the two row means are matrix-vector products with ``weight``
    (``(dy x_hat) @ weight / n`` and ``dy @ weight / n``). Autograd through the same formula would keep twice as
    many intermediate tensors and run three times as many kernels.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, eps):
        width = inputs.shape[-1]
        with torch.autocast(inputs.device.type, enabled=False):
            x = upcast(inputs.reshape(-1, width))
            centered = x - x.mean(dim=-1, keepdim=True)
            rstd = torch.linalg.vector_norm(centered, 2, dim=-1, keepdim=True).square_().div_(width).add_(eps)
            rstd = rstd.rsqrt_()
            x_hat = centered.mul_(rstd)
            output = torch.addcmul(bias.to(x.dtype), x_hat, weight.to(x.dtype)).to(inputs.dtype)
        ctx.save_for_backward(x_hat, rstd, weight)
        ctx.input_dtype = inputs.dtype
        return output.view(inputs.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        x_hat, rstd, weight = ctx.saved_tensors
        width = x_hat.shape[-1]
        with torch.autocast(grad_output.device.type, enabled=False):
            grad = grad_output.reshape(-1, width).to(x_hat.dtype)
            w = weight.to(x_hat.dtype)
            product = grad * x_hat
            grad_weight = product.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_bias = grad.sum(0).to(weight.dtype) if ctx.needs_input_grad[2] else None
            grad_input = None
            if ctx.needs_input_grad[0]:
                scale = rstd / width
                mean_grad_x = torch.mv(product, w).unsqueeze(1).mul_(scale)  # r * mean(dy * weight * x_hat)
                mean_grad = torch.mv(grad, w).unsqueeze(1).mul_(scale)  # r * mean(dy * weight)
                grad_input = torch.mul(grad, w, out=product).mul_(rstd).sub_(mean_grad)
                grad_input = grad_input.addcmul_(x_hat, mean_grad_x, value=-1.0)
                grad_input = grad_input.to(ctx.input_dtype).view(grad_output.shape)
        return grad_input, grad_weight, grad_bias, None


class MultiHeadedAttention(nn.Module):
    """Multi-head scaled dot-product self-attention.

    ``[q_1..q_m] = Q W_Q + b_Q`` (likewise K, V); ``A_i = softmax(q_i k_i^T / sqrt(d))``; ``h_i = A_i v_i``;
    output ``concat(h_1..h_m) W_O + b_O``. The three input projections are one fused ``nn.Linear`` ``qkv``
    (E -> 3E, output rows ordered [W_Q; W_K; W_V]) so queries, keys and values come from one matrix product;
    ``out`` is W_O (E -> E).

    Learnable parameters, with m = num_heads and d = head_size: ``4 (m d)^2 + 4 m d``
    (four E x E weight matrices and four bias vectors of size E = m d).
    """

    def __init__(self, head_size: int, num_heads: int, sequence_length: int, attention: str = "primitive"):
        super().__init__()
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}")
        self.head_size = head_size
        self.num_heads = num_heads
        self.sequence_length = sequence_length
        self.attention = attention
        embed_dim = head_size * num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def get_attention_weights(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Softmax of the scaled scores over the key axis.

        queries, keys: (B, H, T, D) -> attention weights (B, H, T, T) in the queries' dtype, each row summing to 1.
        The softmax runs in float32 (float64 for float64 inputs) in one pass.
        """
        scores = torch.matmul(queries * (1.0 / math.sqrt(queries.shape[-1])), keys.transpose(-2, -1))
        return torch.softmax(scores, dim=-1, dtype=compute_dtype(scores.dtype)).to(queries.dtype)

    def apply_attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The heads ``h_i = A_i v_i``, concatenated.

        queries, keys, values: (B, H, T, D) -> (B, T, H * D).
        """
        if self.attention == "sdpa":
            heads = F.scaled_dot_product_attention(queries, keys, values)
        else:
            heads = torch.matmul(self.get_attention_weights(queries, keys), values)
        return self.merge_heads(heads)

    def split_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, T, H * dim) -> (B, H, T, dim), with ``y[b, h, t, i] = x[b, t, h * dim + i]`` (any dim)."""
        batch_size, sequence_length, width = tensor.shape
        if width % self.num_heads:
            raise ValueError(f"last dimension {width} is not divisible by num_heads={self.num_heads}")
        return tensor.view(batch_size, sequence_length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def merge_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, H, T, dim) -> (B, T, H * dim); the exact inverse of ``split_heads``."""
        batch_size, num_heads, sequence_length, dim = tensor.shape
        return tensor.transpose(1, 2).reshape(batch_size, sequence_length, num_heads * dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, H * D) -> (B, T, H * D)."""
        queries, keys, values = self.qkv(hidden_states).chunk(3, dim=-1)
        heads = self.apply_attention(self.split_heads(queries), self.split_heads(keys), self.split_heads(values))
        return self.out(heads)


def _feed_forward(embed_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(embed_dim, hidden_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, embed_dim),
        nn.Dropout(dropout),
    )


class _AttentionBlock(nn.Module):
    """The submodules both block kinds share: ``layer_norm_1``, ``attn``, ``layer_norm_2``, ``linear``."""

    def __init__(self, embed_dim, hidden_dim, num_heads, sequence_length, dropout=0.0, attention="primitive"):
        super().__init__()
        self.layer_norm_1 = LayerNorm(embed_dim)
        self.attn = MultiHeadedAttention(embed_dim // num_heads, num_heads, sequence_length, attention)
        self.layer_norm_2 = LayerNorm(embed_dim)
        self.linear = _feed_forward(embed_dim, hidden_dim, dropout)


class PostNormAttentionBlock(_AttentionBlock):
    """Transformer block with the normalisation after each residual sum (Vaswani et al., 2017).

    ``a = LN1(x + attn(x)); out = LN2(a + linear(a))``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        x = self.layer_norm_1(x + self.attn(x))
        return self.layer_norm_2(x + self.linear(x))


class PreNormAttentionBlock(_AttentionBlock):
    """Transformer block with the normalisation inside each residual branch (Xiong et al., 2020).

    ``h = x + attn(LN1(x)); out = h + linear(LN2(h))``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        x = x + self.attn(self.layer_norm_1(x))
        return x + self.linear(self.layer_norm_2(x))


BLOCKS = {"prenorm": PreNormAttentionBlock, "postnorm": PostNormAttentionBlock}


# A config field that the data or the run sets, not an experiment: not an override, not in config.json's experiment.
NOT_AN_OPTION = {"option": False}


@dataclass(frozen=True)
class ViTConfig:
    """The constructor arguments of ``VisionTransformer`` (defaults: the specification's, the constructor's too).

    The first seven are the hyperparameters an experiment sets; the image (channels, patches) and the classes come
    from the data, ``attention`` from the run's settings.
    """

    num_layers: int = 4
    block: str = field(default="prenorm", metadata={"choices": tuple(BLOCKS)})
    embed_dim: int = 256
    hidden_dim: int = 512
    num_heads: int = 8
    patch_size: int = 4
    dropout: float = 0.0
    num_channels: int = field(default=3, metadata=NOT_AN_OPTION)
    num_classes: int = field(default=10, metadata=NOT_AN_OPTION)
    num_patches: int = field(default=64, metadata=NOT_AN_OPTION)
    attention: str = field(default="primitive", metadata={**NOT_AN_OPTION, "choices": ATTENTION_IMPLEMENTATIONS})


# Checkpoints written before the blocks and the head had the specification's names: old key prefix -> new.
_OLD_KEY_PREFIXES = {"transformer.": "layers.", "mlp_head.0.": "norm.", "mlp_head.1.": "classifier."}


class VisionTransformer(nn.Module):
    """ViT classifier: patches -> linear embedding -> [CLS] + positions -> blocks -> norm -> head on [CLS].

    Submodules, in the specification's names: ``input_layer`` (patch embedding, C p^2 -> E), ``layers`` (an
    ``nn.ModuleList`` of the attention blocks), ``norm`` (the final ``LayerNorm`` of the [CLS] token) and
    ``classifier`` (``nn.Linear``, E -> num_classes); parameters ``cls_token`` (1, 1, E) and ``pos_embedding``
    (1, 1 + N, E). Parameters with the defaults: 1,086,730 / 2,140,938 / 3,195,146 for 2 / 4 / 6 layers.
    """

    def __init__(
        self,
        embed_dim=ViTConfig.embed_dim,
        hidden_dim=ViTConfig.hidden_dim,
        num_channels=ViTConfig.num_channels,
        num_heads=ViTConfig.num_heads,
        num_layers=ViTConfig.num_layers,
        num_classes=ViTConfig.num_classes,
        patch_size=ViTConfig.patch_size,
        num_patches=ViTConfig.num_patches,
        block=ViTConfig.block,
        dropout=ViTConfig.dropout,
        attention=ViTConfig.attention,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.config = ViTConfig(
            num_layers, block, embed_dim, hidden_dim, num_heads, patch_size, dropout,
            num_channels, num_classes, num_patches, attention,
        )
        self.patch_size = patch_size
        self.num_patches = num_patches
        sequence_length = num_patches + 1
        self.input_layer = nn.Linear(num_channels * patch_size**2, embed_dim)
        self.layers = nn.ModuleList(
            BLOCKS[block](embed_dim, hidden_dim, num_heads, sequence_length, dropout, attention)
            for _ in range(num_layers)
        )
        self.norm = LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + num_patches, embed_dim))

    @classmethod
    def from_config(cls, config: ViTConfig, attention: str | None = None) -> VisionTransformer:
        """The model of ``config``; ``attention`` (a run setting), if given, replaces the config's."""
        return cls(**{**asdict(config), **({"attention": attention} if attention else {})})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the renaming (blocks ``transformer.N``, head ``mlp_head.0``/``mlp_head.1``)
        load as ``layers.N``, ``norm`` and ``classifier``; the parameters' order, hence the optimizer's state, is
        the same in both."""
        for old, new in _OLD_KEY_PREFIXES.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_patches(self, image: torch.Tensor, patch_size: int, flatten_channels: bool = True) -> torch.Tensor:
        """Cut images into non-overlapping square patches, in row-major order over the image.

        image: (B, C, H, W) with H and W divisible by ``patch_size`` ->
        (B, N, C * p * p) with each patch flattened as (channel, row, column) if ``flatten_channels``,
        else (B, N, C, p, p); N = (H / p) * (W / p).
        """
        batch_size, channels, height, width = image.shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"image size {height}x{width} is not divisible by patch_size={patch_size}")
        rows, cols = height // patch_size, width // patch_size
        patches = image.reshape(batch_size, channels, rows, patch_size, cols, patch_size)
        patches = patches.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
        if flatten_channels:
            return patches.reshape(batch_size, rows * cols, channels * patch_size * patch_size)
        return patches.reshape(batch_size, rows * cols, channels, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> logits (B, num_classes)."""
        patches = self.get_patches(x, self.patch_size)
        batch_size, num_patches, _ = patches.shape
        if num_patches > self.num_patches:
            raise ValueError(
                f"the image gives {num_patches} patches but the model has positions for {self.num_patches}: "
                "build the model with a larger num_patches"
            )
        tokens = self.input_layer(patches)
        tokens = torch.cat([self.cls_token.expand(batch_size, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = self.dropout(tokens + self.pos_embedding[:, : num_patches + 1])
        for layer in self.layers:
            tokens = layer(tokens)
        return self.classifier(self.norm(tokens[:, 0]))

    def loss(self, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy. preds: logits (B, num_classes); labels: int64 (B,) -> scalar, in float32 (float64 for
        float64 logits)."""
        return F.cross_entropy(upcast(preds), labels)
