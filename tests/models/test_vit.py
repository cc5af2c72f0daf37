"""The ViT blocks against PyTorch's built-ins, with the built-ins the specification forbids disabled while ours run."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replab.models.vit import (
    LayerNorm,
    MultiHeadedAttention,
    PostNormAttentionBlock,
    PreNormAttentionBlock,
    VisionTransformer,
)
from tests.conftest import forbidden_builtins, with_old_vit_names

SHAPES = [(2, 5, 8), (3, 65, 256), (1, 1, 16), (4, 7, 3, 12)]


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_matches_builtin(shape):
    hidden = shape[-1]
    ours = LayerNorm(hidden)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    x = torch.randn(shape) * 3 + 1.5
    x_ours = x.clone().requires_grad_()
    with forbidden_builtins():
        y = ours(x_ours)
        y.pow(2).sum().backward()
    x_ref = x.clone().requires_grad_()
    w, b = ours.weight.detach().clone().requires_grad_(), ours.bias.detach().clone().requires_grad_()
    y_ref = F.layer_norm(x_ref, (hidden,), w, b, eps=1e-5)
    y_ref.pow(2).sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, w.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.bias.grad, b.grad, atol=1e-4, rtol=1e-4)


def test_layernorm_uses_biased_variance_and_initial_affine():
    ln = LayerNorm(4)
    assert torch.equal(ln.weight, torch.ones(4)) and torch.equal(ln.bias, torch.zeros(4))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / math.sqrt(1.25 + 1e-5)  # biased variance of 1..4 is 1.25 (unbiased would be 5/3)
    torch.testing.assert_close(ln(x), expected)


def test_layernorm_keeps_low_precision_dtype():
    ln = LayerNorm(8)
    x = torch.randn(2, 3, 8)
    y = ln(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.layer_norm(x, (8,)), atol=3e-2, rtol=3e-2)


def test_layernorm_rejects_wrong_width():
    with pytest.raises(ValueError, match="last dimension of 8"):
        LayerNorm(8)(torch.randn(2, 7))


def _attention_reference(ours: MultiHeadedAttention) -> nn.MultiheadAttention:
    embed = ours.head_size * ours.num_heads
    ref = nn.MultiheadAttention(embed, ours.num_heads, batch_first=True, dtype=ours.qkv.weight.dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    return ref


@pytest.mark.parametrize("batch,seq,heads,head_size", [(2, 5, 2, 4), (3, 65, 8, 32), (1, 1, 1, 8), (2, 17, 4, 3)])
def test_attention_matches_builtin(batch, seq, heads, head_size):
    ours = MultiHeadedAttention(head_size, heads, seq)
    ref = _attention_reference(ours)
    x = torch.randn(batch, seq, heads * head_size)
    x_ours = x.clone().requires_grad_()
    with forbidden_builtins():
        y = ours(x_ours)
        y.sum().backward()
    x_ref = x.clone().requires_grad_()
    y_ref, _ = ref(x_ref, x_ref, x_ref, need_weights=False)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.qkv.weight.grad, ref.in_proj_weight.grad, atol=1e-4, rtol=1e-4)


def test_attention_weights_match_builtin_average():
    ours = MultiHeadedAttention(4, 3, 6)
    ref = _attention_reference(ours)
    x = torch.randn(2, 6, 12)
    q, k, _ = ours.qkv(x).chunk(3, dim=-1)
    with forbidden_builtins():
        weights = ours.get_attention_weights(ours.split_heads(q), ours.split_heads(k))
    assert weights.shape == (2, 3, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 6))
    _, ref_weights = ref(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("heads,dim", [(2, 3), (8, 32), (5, 1)])
def test_split_and_merge_heads_index_contract(heads, dim):
    attn = MultiHeadedAttention(dim, heads, 4)
    x = torch.randn(3, 4, heads * dim)
    y = attn.split_heads(x)
    assert y.shape == (3, heads, 4, dim)
    for b, h, t, i in [(0, heads - 1, 2, dim - 1), (2, 0, 3, 0), (1, heads // 2, 1, dim // 2)]:
        assert y[b, h, t, i] == x[b, t, h * dim + i]
    assert torch.equal(attn.merge_heads(y), x)
    # split_heads works for any per-head width, not only head_size
    assert attn.split_heads(torch.randn(2, 4, heads * 7)).shape == (2, heads, 4, 7)


def test_attention_parameter_count_formula():
    for heads, size in [(8, 32), (2, 5), (1, 16)]:
        attn = MultiHeadedAttention(size, heads, 3)
        e = heads * size
        assert sum(p.numel() for p in attn.parameters()) == 4 * e**2 + 4 * e


def test_sdpa_option_equals_primitive_path():
    torch.manual_seed(1)
    ours = MultiHeadedAttention(16, 4, 9)
    fused = MultiHeadedAttention(16, 4, 9, attention="sdpa")
    fused.load_state_dict(ours.state_dict())
    x = torch.randn(3, 9, 64)
    torch.testing.assert_close(ours(x), fused(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="primitive"):
        MultiHeadedAttention(16, 4, 9, attention="flash")


class _RefPreNorm(nn.Module):
    def __init__(self, ours):
        super().__init__()
        e, dtype = ours.layer_norm_1.hidden_size, ours.layer_norm_1.weight.dtype
        self.ln1, self.ln2 = nn.LayerNorm(e, dtype=dtype), nn.LayerNorm(e, dtype=dtype)
        self.attn = _attention_reference(ours.attn)
        self.linear = ours.linear
        for ref, src in [(self.ln1, ours.layer_norm_1), (self.ln2, ours.layer_norm_2)]:
            ref.load_state_dict({"weight": src.weight.detach(), "bias": src.bias.detach()})

    def attend(self, x):
        return self.attn(x, x, x, need_weights=False)[0]

    def forward(self, x):
        x = x + self.attend(self.ln1(x))
        return x + self.linear(self.ln2(x))


class _RefPostNorm(_RefPreNorm):
    def forward(self, x):
        x = self.ln1(x + self.attend(x))
        return self.ln2(x + self.linear(x))


@pytest.mark.parametrize(
    "block_cls,ref_cls", [(PreNormAttentionBlock, _RefPreNorm), (PostNormAttentionBlock, _RefPostNorm)]
)
@pytest.mark.parametrize("batch,seq,embed,heads", [(2, 5, 16, 4), (1, 65, 64, 8)])
def test_blocks_match_reference(block_cls, ref_cls, batch, seq, embed, heads):
    block = block_cls(embed, 2 * embed, heads, seq)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ref = ref_cls(block)
    x = torch.randn(batch, seq, embed)
    with forbidden_builtins():
        y = block(x)
    torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-4)
    assert [name for name, _ in block.named_children()] == ["layer_norm_1", "attn", "layer_norm_2", "linear"]
    assert [type(m) for m in block.linear] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.Dropout]


def test_get_patches_matches_unfold():
    model = VisionTransformer(num_layers=1)
    for (b, c, h, w), p in [((2, 3, 32, 32), 4), ((1, 2, 8, 12), 2), ((3, 1, 6, 6), 3), ((2, 3, 32, 32), 8)]:
        image = torch.randn(b, c, h, w)
        reference = F.unfold(image, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p), row-major patches
        patches = model.get_patches(image, p)
        assert patches.shape == (b, (h // p) * (w // p), c * p * p)
        torch.testing.assert_close(patches, reference, rtol=0, atol=0)
        unflat = model.get_patches(image, p, flatten_channels=False)
        assert unflat.shape == (b, (h // p) * (w // p), c, p, p)
        assert torch.equal(unflat[0, 1], image[0, :, 0:p, p : 2 * p])
    with pytest.raises(ValueError, match="divisible"):
        model.get_patches(torch.randn(1, 3, 10, 10), 4)


class _RefViT(nn.Module):
    """The same network from built-ins: F.unfold patches, nn.LayerNorm, nn.MultiheadAttention blocks."""

    def __init__(self, ours: VisionTransformer):
        super().__init__()
        self.ours = ours
        ref_cls = _RefPreNorm if ours.config.block == "prenorm" else _RefPostNorm
        self.blocks = nn.Sequential(*(ref_cls(block) for block in ours.layers))
        self.head_norm = nn.LayerNorm(ours.config.embed_dim, dtype=ours.norm.weight.dtype)
        self.head_norm.load_state_dict(ours.norm.state_dict())

    def forward(self, x):
        o = self.ours
        patches = F.unfold(x, o.patch_size, stride=o.patch_size).transpose(1, 2)
        tokens = o.input_layer(patches)
        tokens = torch.cat([o.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + o.pos_embedding
        out = self.blocks(tokens)[:, 0]
        return o.classifier(self.head_norm(out))


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_vision_transformer_matches_reference(block):
    model = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2, block=block)
    images = torch.randn(3, 3, 32, 32)
    with forbidden_builtins():
        logits = model(images)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, _RefViT(model)(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layers,count", [(2, 1_086_730), (4, 2_140_938), (6, 3_195_146)])
def test_vision_transformer_parameter_counts(layers, count):
    model = VisionTransformer(num_layers=layers)
    assert sum(p.numel() for p in model.parameters()) == count


def test_vision_transformer_structure_and_loss():
    model = VisionTransformer(num_layers=2, block="postnorm")
    assert isinstance(model.layers, nn.ModuleList) and len(model.layers) == 2  # the specification's names
    assert all(isinstance(b, PostNormAttentionBlock) for b in model.layers)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.weight.shape == (10, 256)
    assert isinstance(model.norm, LayerNorm) and model.norm.hidden_size == 256
    assert model.pos_embedding.shape == (1, 65, 256) and model.cls_token.shape == (1, 1, 256)
    preds, labels = torch.randn(5, 10), torch.randint(0, 10, (5,))
    torch.testing.assert_close(model.loss(preds, labels), F.cross_entropy(preds, labels))
    with pytest.raises(ValueError, match="block must be one of"):
        VisionTransformer(block="sandwich")
    rebuilt = VisionTransformer.from_config(model.config)
    assert rebuilt.config == model.config
    assert rebuilt.load_state_dict(model.state_dict()) is not None


def test_vision_transformer_smaller_images_and_too_many_patches():
    model = VisionTransformer(embed_dim=16, hidden_dim=16, num_heads=2, num_layers=1)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="num_patches"):
        model(torch.randn(1, 3, 36, 36))


def test_vision_transformer_bf16_autocast_close_to_fp32():
    model = VisionTransformer(embed_dim=64, hidden_dim=128, num_heads=4, num_layers=2)
    images = torch.randn(4, 3, 32, 32)
    reference = model(images)
    with forbidden_builtins(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.1)


def test_vision_transformer_trains_on_a_fixed_batch():
    torch.manual_seed(0)
    model = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    with forbidden_builtins():
        for _ in range(40):
            loss = model.loss(model(images), labels)
            first = first if first is not None else loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert loss.item() < 0.5 * first


def test_layernorm_gradients_for_strided_and_low_precision_inputs():
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    base = torch.randn(16, 6) * 2 - 1
    x = base.t().requires_grad_()  # non-contiguous (6, 16) view
    g = torch.randn(6, 16)
    with forbidden_builtins():
        ln(x).backward(g)
    x_ref = base.t().clone().requires_grad_()
    F.layer_norm(x_ref, (16,), ln.weight, ln.bias).backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    # bf16 input: bf16 output and input gradient, float32 statistics
    xb = base.t().bfloat16().requires_grad_()
    with forbidden_builtins():
        yb = ln(xb)
        yb.backward(g.bfloat16())
    assert yb.dtype == xb.grad.dtype == torch.bfloat16 and ln.weight.grad.dtype == torch.float32
    torch.testing.assert_close(xb.grad.float(), x_ref.grad, atol=0.05, rtol=0.05)


def test_layernorm_only_computes_the_gradients_asked_for():
    ln = LayerNorm(8).requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    ln(x).sum().backward()
    assert x.grad is not None and ln.weight.grad is None
    y = LayerNorm(8)(torch.randn(3, 8))  # input without gradient: weight and bias still get theirs
    y.pow(2).sum().backward()


def _reference_parameter(reference: "_RefViT", name: str) -> torch.Tensor:
    """The parameter of the built-in reference that plays the role of replab's parameter ``name``."""
    parts = name.split(".")
    if parts[0] == "layers":
        block = reference.blocks[int(parts[1])]
        module, leaf = ".".join(parts[2:-1]), parts[-1]
        mapped = {"layer_norm_1": block.ln1, "layer_norm_2": block.ln2, "attn.out": block.attn.out_proj}
        if module == "attn.qkv":
            return getattr(block.attn, f"in_proj_{leaf}")
        if module in mapped:
            return getattr(mapped[module], leaf)
    if name.startswith("norm."):
        return getattr(reference.head_norm, parts[-1])
    return dict(reference.ours.named_parameters())[name]  # shared with the reference


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_vision_transformer_gradients_match_reference(block):
    """Every parameter's gradient through the hand-written backward passes equals the built-in network's."""
    torch.manual_seed(2)
    model = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2, block=block)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    reference = _RefViT(model)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    names = [name for name, _ in model.named_parameters()]
    with forbidden_builtins():
        loss = model.loss(model(images), labels)
        grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_loss = F.cross_entropy(reference(images), labels)
    ref_grads = torch.autograd.grad(ref_loss, [_reference_parameter(reference, n) for n in names])
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name, grad, expected in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_attention_weights_in_bf16_are_the_float32_softmax_rounded():
    attn = MultiHeadedAttention(8, 2, 5)
    q = torch.randn(2, 2, 5, 8).bfloat16().requires_grad_()
    k = torch.randn(2, 2, 5, 8).bfloat16().requires_grad_()
    with forbidden_builtins():
        weights = attn.get_attention_weights(q, k)
    scores = torch.matmul(q * (1.0 / math.sqrt(8)), k.transpose(-2, -1))
    expected = torch.softmax(scores.float(), dim=-1).to(torch.bfloat16)
    assert weights.dtype == torch.bfloat16
    torch.testing.assert_close(weights, expected, atol=0, rtol=0)
    g = torch.randn_like(weights)
    got = torch.autograd.grad(weights, [q, k], g)
    want = torch.autograd.grad(expected, [q, k], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


# -- checkpoints written before the blocks were ``layers`` and the head ``norm`` + ``classifier`` ----------------

# A 1-layer ViT's state-dict keys as replab wrote them before the renaming (``self.transformer``, an nn.Sequential
# of blocks; ``self.mlp_head``, nn.Sequential(LayerNorm, Linear)), in the order they were written.
OLD_KEYS_ONE_LAYER = [
    "cls_token", "pos_embedding", "input_layer.weight", "input_layer.bias",
    "transformer.0.layer_norm_1.weight", "transformer.0.layer_norm_1.bias",
    "transformer.0.attn.qkv.weight", "transformer.0.attn.qkv.bias", "transformer.0.attn.out.weight",
    "transformer.0.attn.out.bias", "transformer.0.layer_norm_2.weight", "transformer.0.layer_norm_2.bias",
    "transformer.0.linear.0.weight", "transformer.0.linear.0.bias", "transformer.0.linear.3.weight",
    "transformer.0.linear.3.bias",
    "mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias",
]


def test_old_state_dict_names_are_the_ones_replab_wrote():
    model = VisionTransformer(embed_dim=8, hidden_dim=8, num_heads=2, num_layers=1)
    assert list(with_old_vit_names(model.state_dict())) == OLD_KEYS_ONE_LAYER
    # the parameters keep the old order, which the optimizer's state (indexed by position) relies on
    assert [name for name, _ in model.named_parameters()] == list(model.state_dict())


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_a_state_dict_with_the_old_names_loads_and_gives_identical_outputs(block):
    torch.manual_seed(4)
    trained = VisionTransformer(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=3, block=block)
    old = with_old_vit_names(trained.state_dict())
    assert {"transformer.2.attn.qkv.weight", "mlp_head.0.weight", "mlp_head.1.bias"} <= set(old)
    assert not any(k.startswith(("layers.", "norm.", "classifier.")) for k in old)
    torch.manual_seed(5)
    fresh = VisionTransformer(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=3, block=block)
    fresh.load_state_dict(old)  # strict: every key used, none missing
    assert "transformer.0.attn.qkv.weight" in old  # the caller's dict is left as it was
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name]), name
    images = torch.randn(3, 3, 32, 32)
    with forbidden_builtins():
        assert torch.equal(fresh(images), trained(images))
    # inside a wrapper (keys with a prefix), as when the ViT is a submodule
    wrapped = nn.Sequential(VisionTransformer(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=3, block=block))
    wrapped.load_state_dict({f"0.{k}": v for k, v in old.items()})
    assert torch.equal(wrapped(images), trained(images))


# -- float64 in, float64 out: gradcheck and the built-ins in float64 -------------------------------------------

def _gradcheck(module: nn.Module, *inputs: torch.Tensor) -> None:
    """``torch.autograd.gradcheck`` of ``module`` in float64, with respect to its inputs and all its parameters,
    with the forbidden built-ins disabled."""
    module = module.double()
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    inputs = tuple(x.double().requires_grad_() for x in inputs)

    def call(*tensors):
        parameters = dict(zip(names, tensors[len(inputs):], strict=True))
        return torch.func.functional_call(module, parameters, tensors[: len(inputs)])

    with forbidden_builtins():
        assert torch.autograd.gradcheck(call, (*inputs, *params))


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4)])
def test_layernorm_gradcheck_in_float64(shape):
    ln = LayerNorm(shape[-1])
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    _gradcheck(ln, torch.randn(shape) * 2 + 1)


@pytest.mark.parametrize("batch,seq,heads,head_size", [(2, 4, 2, 3), (1, 3, 1, 4)])
def test_attention_gradcheck_in_float64(batch, seq, heads, head_size):
    _gradcheck(MultiHeadedAttention(head_size, heads, seq), torch.randn(batch, seq, heads * head_size))


@pytest.mark.parametrize("block_cls", [PreNormAttentionBlock, PostNormAttentionBlock])
def test_blocks_gradcheck_in_float64(block_cls):
    block = block_cls(4, 6, 2, 3)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    _gradcheck(block, torch.randn(2, 3, 4))


F64 = {"atol": 1e-12, "rtol": 1e-10}  # float64 rounding; a float32 step anywhere inside is off by ~1e-7


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_in_float64_matches_builtin(shape):
    ln = LayerNorm(shape[-1]).double()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1.5).requires_grad_()
    with forbidden_builtins():
        y = ln(x)
        grads = torch.autograd.grad(y.pow(2).sum(), [x, ln.weight, ln.bias])
    y_ref = F.layer_norm(x, shape[-1:], ln.weight, ln.bias, eps=1e-5)
    ref_grads = torch.autograd.grad(y_ref.pow(2).sum(), [x, ln.weight, ln.bias])
    assert y.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)
    torch.testing.assert_close(y, y_ref, **F64)
    for grad, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, expected, **F64)


@pytest.mark.parametrize("batch,seq,heads,head_size", [(2, 5, 2, 4), (3, 65, 8, 32), (2, 17, 4, 3)])
def test_attention_in_float64_matches_builtin(batch, seq, heads, head_size):
    ours = MultiHeadedAttention(head_size, heads, seq).double()
    ref = _attention_reference(ours)
    x = torch.randn(batch, seq, heads * head_size, dtype=torch.float64, requires_grad=True)
    with forbidden_builtins():
        y = ours(x)
        q, k, _ = ours.qkv(x).chunk(3, dim=-1)
        weights = ours.get_attention_weights(ours.split_heads(q), ours.split_heads(k))
        (grad,) = torch.autograd.grad(y.sum(), x)
    y_ref, ref_weights = ref(x, x, x, need_weights=True, average_attn_weights=False)
    (ref_grad,) = torch.autograd.grad(y_ref.sum(), x)
    assert y.dtype == weights.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(weights, ref_weights, **F64)
    torch.testing.assert_close(grad, ref_grad, **F64)
    fused = MultiHeadedAttention(head_size, heads, seq, attention="sdpa").double()
    fused.load_state_dict(ours.state_dict())
    torch.testing.assert_close(fused(x), y, **F64)


@pytest.mark.parametrize(
    "block_cls,ref_cls", [(PreNormAttentionBlock, _RefPreNorm), (PostNormAttentionBlock, _RefPostNorm)]
)
def test_blocks_in_float64_match_reference(block_cls, ref_cls):
    block = block_cls(16, 32, 4, 5).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with forbidden_builtins():
        y = block(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, ref_cls(block)(x), **F64)


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_vision_transformer_in_float64_matches_reference(block):
    model = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2, block=block).double()
    images, labels = torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (3,))
    with forbidden_builtins():
        logits = model(images)
        loss = model.loss(logits, labels)
    reference = _RefViT(model)(images)
    assert logits.dtype == loss.dtype == torch.float64
    torch.testing.assert_close(logits, reference, **F64)
    torch.testing.assert_close(loss, F.cross_entropy(reference, labels), **F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    """bf16/fp16 in, the same dtype out, from float32 statistics, softmax and loss (the float32 result rounded)."""
    ln = LayerNorm(8)
    x = torch.randn(2, 3, 8).to(dtype)
    with forbidden_builtins():
        y = ln(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, F.layer_norm(x.float(), (8,)).to(dtype), atol=0, rtol=0)
    attn = MultiHeadedAttention(4, 2, 5)
    q, k = torch.randn(2, 2, 5, 4).to(dtype), torch.randn(2, 2, 5, 4).to(dtype)
    with forbidden_builtins():
        weights = attn.get_attention_weights(q, k)
    scores = torch.matmul(q * 0.5, k.transpose(-2, -1))
    torch.testing.assert_close(weights, torch.softmax(scores.float(), dim=-1).to(dtype), atol=0, rtol=0)
    preds, labels = torch.randn(4, 10).to(dtype), torch.randint(0, 10, (4,))
    loss = VisionTransformer(num_layers=1).loss(preds, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(preds.float(), labels), atol=0, rtol=0)
