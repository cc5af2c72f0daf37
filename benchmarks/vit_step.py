"""One ViT training step: replab's ``VisionTransformer`` against the same network from PyTorch built-ins.

Usage::

    python -m benchmarks.vit_step [--device auto] [--repeats 5] [--warmup 2] [--batch-size 128] [--layers 6]
        [--modes fp32,bf16,fp32-compile,bf16-compile] [--attention primitive] [--threads N] [--force-bf16]
        [--out bench-results/vit_step.json] [--quick]
    python -m benchmarks vit_step [same options]

A step is forward, float32 cross-entropy, backward and ``torch.optim.AdamW`` (lr 1e-4), on a fixed batch of
random normalised images (B, 3, 32, 32). Contestants:

* replab: ``VisionTransformer(num_layers=6)`` (PreNorm, E=256, 8 heads, MLP 512, patch 4; from primitives);
* reference: the same patching, embeddings and head (``nn.LayerNorm`` + ``nn.Linear``) around
  ``nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=512, dropout=0.0, norm_first=True,
  activation="gelu", batch_first=True)`` blocks (fused attention, native layer norm). Its parameter count is
  asserted equal to replab's, and with replab's weights copied in it computes the same logits (checked).

Modes: ``fp32`` (eager), ``bf16`` (``torch.autocast`` bfloat16), and each under ``torch.compile`` (a compile
failure is reported with its reason, not raised). In every mode a square matrix product in the mode's dtype is
timed in the same rounds, interleaved with the two steps, as the device's matrix-product peak.

FLOPs are counted analytically, matrix products only: per block ``2 T E (3E) + 2 T^2 E + 2 T^2 E + 2 T E^2 +
2 T E Hd * 2`` per image (QKV projection, Q K^T, A V, output projection, MLP), the patch embedding and the head;
training = 3x the forward products (one forward, two backward products), except the patch embedding whose input
needs no gradient (2x). ``fraction of GEMM-bound`` = (FLOPs / step time) / measured peak, i.e. the step time
the products alone would need at the peak, divided by the measured step time.

Eager modes also time ``ModelProducts``: the step's own matrix products alone, same shapes. Its time over the
step time (``fraction_of_model_products_bound``) is the share of the step spent in products; its FLOP rate over
the square product's (``model_products_fraction_of_peak``) is how close products of these (small) shapes get to
the peak at all, the ceiling of ``fraction_of_gemm_bound``.

On a CPU without bf16 matrix instructions (no AVX512-BF16 / AMX) bf16 products run a slow fallback; when the
bf16 product peak measures under half the fp32 one, the bf16 modes are skipped and reported as such
(``--force-bf16`` runs them anyway). The targets were set for a 2-core CPU; they are evaluated on any device.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common
from replab.models.vit import VisionTransformer

NAME = "vit_step"
MODES = ("fp32", "bf16", "fp32-compile", "bf16-compile")
TARGETS = {"fp32": {"ratio": 1.0, "fraction": 0.85}, "bf16": {"ratio": 1.5, "fraction": 0.60}}


class ReferenceViT(nn.Module):
    """replab's ViT layout from PyTorch built-ins: ``nn.TransformerEncoderLayer`` blocks, ``nn.LayerNorm`` head."""

    def __init__(self, embed_dim=256, hidden_dim=512, num_channels=3, num_heads=8, num_layers=6, num_classes=10,
                 patch_size=4, num_patches=64):
        super().__init__()
        self.patch_size = patch_size
        self.input_layer = nn.Linear(num_channels * patch_size**2, embed_dim)
        self.layers = nn.Sequential(*(
            nn.TransformerEncoderLayer(d_model=embed_dim, nhead=num_heads, dim_feedforward=hidden_dim, dropout=0.0,
                                       norm_first=True, activation="gelu", batch_first=True)
            for _ in range(num_layers)
        ))
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + num_patches, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        tokens = self.input_layer(patches)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.pos_embedding[:, : tokens.shape[1]]
        return self.classifier(self.norm(self.layers(tokens)[:, 0]))

    @torch.no_grad()
    def load_from(self, model: VisionTransformer) -> ReferenceViT:
        """Copy replab's weights in (same layout), so both compute the same function."""
        self.input_layer.load_state_dict(model.input_layer.state_dict())
        self.cls_token.copy_(model.cls_token)
        self.pos_embedding.copy_(model.pos_embedding)
        self.norm.load_state_dict(model.norm.state_dict())
        self.classifier.load_state_dict(model.classifier.state_dict())
        for ref, ours in zip(self.layers, model.layers, strict=True):
            ref.self_attn.in_proj_weight.copy_(ours.attn.qkv.weight)
            ref.self_attn.in_proj_bias.copy_(ours.attn.qkv.bias)
            ref.self_attn.out_proj.load_state_dict(ours.attn.out.state_dict())
            ref.linear1.load_state_dict(ours.linear[0].state_dict())
            ref.linear2.load_state_dict(ours.linear[3].state_dict())
            ref.norm1.load_state_dict(ours.layer_norm_1.state_dict())
            ref.norm2.load_state_dict(ours.layer_norm_2.state_dict())
        return self


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(config, batch_size: int, image_size: int = 32) -> dict:
    """Matrix-product FLOPs of one forward pass, by part (multiply-add = 2 FLOPs)."""
    e, hd = config.embed_dim, config.hidden_dim
    n = (image_size // config.patch_size) ** 2
    t = n + 1
    patch_dim = config.num_channels * config.patch_size**2
    per_block = 2 * t * e * 3 * e + 2 * t * t * e + 2 * t * t * e + 2 * t * e * e + 2 * 2 * t * e * hd
    return {
        "patch_embedding": batch_size * 2 * n * patch_dim * e,
        "blocks": batch_size * config.num_layers * per_block,
        "attention_scores_and_mix": batch_size * config.num_layers * 4 * t * t * e,
        "head": batch_size * 2 * e * config.num_classes,
    }


def training_flops(config, batch_size: int, image_size: int = 32) -> float:
    """FLOPs of one training step: 3x the forward products, 2x for the patch embedding (no input gradient)."""
    f = forward_flops(config, batch_size, image_size)
    return 2.0 * f["patch_embedding"] + 3.0 * (f["blocks"] + f["head"])


class ModelProducts:
    """The matrix products of one training step, alone: every one the step runs, with the step's shapes.

    Per block: the four linear layers' forward product, input gradient and weight gradient ((B*T, in) x (in, out)
    and the two transposed products), and attention's six batched products over (B*H, T, D) (Q K^T and A V
    forward, two of each backward); plus the patch embedding (forward and weight gradient) and the head.
    Timed like a step, it is the time the step's products need at these shapes: ``step time / this`` says how
    much of the step is spent outside the products, independently of how far small products are from the peak
    of a large square one.
    """

    def __init__(self, config, batch_size: int, device: torch.device, dtype: torch.dtype):
        n = (32 // config.patch_size) ** 2
        t, e, hd, h = n + 1, config.embed_dim, config.hidden_dim, config.num_heads
        m = batch_size * t
        self.layers = config.num_layers
        make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
        self.linears = [(make(m, i), make(o, i), make(m, o)) for i, o in ((e, 3 * e), (e, e), (e, hd), (hd, e))]
        patch_dim = config.num_channels * config.patch_size**2
        self.patch = (make(batch_size * n, patch_dim), make(e, patch_dim), make(batch_size * n, e))
        self.head = (make(batch_size, e), make(config.num_classes, e), make(batch_size, config.num_classes))
        bh, d = batch_size * h, e // h
        self.q, self.k, self.a = make(bh, t, d), make(bh, t, d), make(bh, t, t)
        linear = lambda x, w, products: products * 2 * x.shape[0] * x.shape[1] * w.shape[0]  # noqa: E731
        self.flops = (linear(*self.patch[:2], 2) + linear(*self.head[:2], 3)
                      + self.layers * (sum(linear(x, w, 3) for x, w, _ in self.linears) + 6 * 2 * bh * t * t * d))

    @staticmethod
    def _linear(x, w, g, input_grad=True):
        torch.mm(x, w.t())
        if input_grad:
            torch.mm(g, w)
        torch.mm(g.t(), x)

    def __call__(self) -> None:
        self._linear(*self.patch, input_grad=False)
        for _ in range(self.layers):
            for x, w, g in self.linears:
                self._linear(x, w, g)
            q, k, a = self.q, self.k, self.a
            torch.bmm(q, k.transpose(1, 2))  # scores
            torch.bmm(a, k)  # A V
            torch.bmm(a.transpose(1, 2), q)  # dV
            torch.bmm(q, k.transpose(1, 2))  # dA = dO V^T
            torch.bmm(a, k)  # dQ
            torch.bmm(a.transpose(1, 2), q)  # dK
        self._linear(*self.head)


def check_reference(ours: VisionTransformer, reference: ReferenceViT, device: torch.device) -> float:
    """Max |logits difference| of the two networks with the same weights, fp32, on a small random batch."""
    reference.load_from(ours)
    images = torch.randn(4, ours.config.num_channels, 32, 32, generator=torch.Generator().manual_seed(1))
    images = images.to(device)
    with torch.no_grad():
        return float((ours(images) - reference(images)).abs().max())


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp_dtype: torch.dtype | None,
              compile_model: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile_model else model
    device_type = images.device.type

    def step():
        with torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            loss = F.cross_entropy(forward(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0], batch_size=128, repeats=5, warmup=2)
    parser.add_argument("--layers", type=int, default=6, help="transformer blocks (default 6, the spec's ViT-6)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of {', '.join(MODES)} (default all; --quick: fp32,bf16)")
    parser.add_argument("--attention", choices=("primitive", "sdpa"), default="primitive",
                        help="replab's attention path (default: from primitives)")
    common.add_force_bf16(parser, "bf16 modes")
    return parser


def run(args: argparse.Namespace) -> dict:
    device = common.setup(args)
    modes = common.parse_modes(args.modes, MODES)
    if args.quick and args.modes == ",".join(MODES):
        modes = ["fp32", "bf16"]
    model_args = dict(num_layers=args.layers)
    if args.quick:
        model_args = dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=1)
    batch = args.batch_size if not args.quick else min(args.batch_size, 8)
    info = common.machine_info(device)
    common.log(f"{NAME}: device {device}, {torch.get_num_threads()} threads, batch {batch}, modes {', '.join(modes)}")

    torch.manual_seed(0)
    probe = VisionTransformer(**model_args, attention=args.attention).to(device)
    config = probe.config
    reference_probe = ReferenceViT(config.embed_dim, config.hidden_dim, config.num_channels, config.num_heads,
                                   config.num_layers, config.num_classes, config.patch_size,
                                   config.num_patches).to(device)
    parameters = {"replab": count_parameters(probe), "reference": count_parameters(reference_probe)}
    assert parameters["replab"] == parameters["reference"], f"parameter counts differ: {parameters}"
    max_logit_difference = check_reference(probe, reference_probe, device)
    del probe, reference_probe

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, config.num_channels, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, config.num_classes, (batch,), generator=generator).to(device)
    flops = training_flops(config, batch)

    peaks: dict[str, common.GemmPeak] = {}
    for dtype_name in sorted({m.split("-")[0] for m in modes} | {"fp32"}):
        dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
        peaks[dtype_name] = common.GemmPeak(device, dtype, size=256 if args.quick else None)
        common.log(f"{dtype_name} matrix product: n={peaks[dtype_name].size}, "
            f"{peaks[dtype_name].calibration_flops_per_s / 1e9:.1f} GFLOP/s (calibration)")
    bf16_skip = common.bf16_skip(peaks, device, args.force_bf16, runs="them")

    results = {}
    for mode in modes:
        precision = mode.split("-")[0]
        compiled = mode.endswith("compile")
        entry: dict = {"precision": precision, "compiled": compiled}
        results[mode] = entry
        if precision == "bf16" and bf16_skip:
            entry["status"] = bf16_skip
            common.log(f"{mode}: {bf16_skip}")
            continue
        amp_dtype = torch.bfloat16 if precision == "bf16" else None
        torch.manual_seed(0)
        ours = VisionTransformer(**model_args, attention=args.attention).to(device)
        reference = ReferenceViT(config.embed_dim, config.hidden_dim, config.num_channels, config.num_heads,
                                 config.num_layers, config.num_classes, config.patch_size,
                                 config.num_patches).to(device).load_from(ours)
        steps, first_call = {}, {}
        failed = False
        for name, model in (("replab", ours), ("reference", reference)):
            begin = time.perf_counter()
            try:  # first call: compilation (timed separately) or library warm-up
                steps[name] = make_step(model, images, labels, amp_dtype, compiled)
                steps[name]()
            except Exception as error:  # a compiler failure is a result, not a crash
                entry["status"] = f"failed ({name}): {common.first_line(error)}"
                common.log(f"{mode}: {entry['status']}")
                failed = True
                break
            first_call[name] = time.perf_counter() - begin
        if failed:
            continue
        entry["first_call_s"] = first_call
        common.log(f"{mode}: timing {args.repeats} rounds after {args.warmup} warm-up calls")
        contestants = {**steps, "gemm_peak": peaks[precision]}
        if not compiled:
            contestants["model_products"] = ModelProducts(config, batch, device,
                                                          amp_dtype or torch.float32)
        try:
            seconds = common.interleaved(contestants, device, args.repeats, args.warmup, common.log)
        except Exception as error:  # e.g. a recompilation failing after the first call
            entry["status"] = f"failed while timing: {common.first_line(error)}"
            common.log(f"{mode}: {entry['status']}")
            continue
        peak_rates = [peaks[precision].flops / s for s in seconds["gemm_peak"]]
        if not compiled:
            entry["fraction_of_model_products_bound"] = {
                k: common.median(common.paired(seconds["model_products"], seconds[k], lambda g, s: g / s))
                for k in steps
            }
            entry["model_products_fraction_of_peak"] = common.median(
                common.paired(seconds["model_products"], peak_rates, lambda g, p: flops / g / p))
        entry.update({
            "status": "ok",
            "images_per_s": {k: batch / common.median(seconds[k]) for k in steps},
            "ratio_replab_over_reference": common.median(common.paired(seconds["reference"], seconds["replab"],
                                                         lambda r, o: r / o)),
            "achieved_flops_per_s": {k: flops / common.median(seconds[k]) for k in steps},
            "gemm_peak_flops_per_s": common.median(peak_rates),
            "fraction_of_gemm_bound": {
                k: common.median(common.paired(seconds[k], peak_rates, lambda s, p: flops / s / p)) for k in steps
            },
            "timings": {k: common.timing_summary(v) for k, v in seconds.items()},
        })

    recommendation = {}
    for precision in ("fp32", "bf16"):
        done = {m: results[m] for m in (precision, f"{precision}-compile")
                if m in results and results[m].get("status") == "ok"}
        if not done:
            continue
        best = max(done, key=lambda m: done[m]["images_per_s"]["replab"])
        other = [m for m in done if m != best]
        why = f"replab {done[best]['images_per_s']['replab']:.1f} images/s"
        if other:
            why += f" vs {done[other[0]]['images_per_s']['replab']:.1f} for {other[0]}"
        elif f"{precision}-compile" in results and results[f"{precision}-compile"].get("status") != "ok":
            why += f"; {precision}-compile: {results[f'{precision}-compile'].get('status')}"
        else:
            why += "; the other mode was not run"
        recommendation[precision] = {"mode": best, "compile": best.endswith("compile"), "why": why}

    targets = []
    for precision, goal in TARGETS.items():
        chosen = recommendation.get(precision)
        entry = results.get(chosen["mode"]) if chosen else None
        note = f"mode {chosen['mode']}" if chosen else (
            results.get(precision, {}).get("status") or f"{precision} modes not run")
        targets.append(common.target_row(f"{precision} ratio replab/reference", entry and
                                  entry["ratio_replab_over_reference"], goal["ratio"], unit="x", note=note))
        targets.append(common.target_row(f"{precision} fraction of GEMM-bound", entry and
                                  entry["fraction_of_gemm_bound"]["replab"], goal["fraction"], note=note))

    payload = {
        "benchmark": NAME,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.finish_machine_info(info),
        "settings": {
            "device": str(device), "batch_size": batch, "repeats": args.repeats, "warmup": args.warmup,
            "modes": modes, "quick": args.quick, "attention": args.attention, "model": dataclasses.asdict(config),
            "optimizer": "AdamW(lr=1e-4), torch defaults", "threads": torch.get_num_threads(),
            "gemm_peak": {k: v.describe() for k, v in peaks.items()},
        },
        "parameters": parameters,
        "reference_max_logit_difference": max_logit_difference,
        "flops_per_step": flops,
        "forward_flops_by_part": forward_flops(config, batch),
        "results": results,
        "recommended_default": recommendation,
        "targets": targets,
    }
    return payload


def report(payload: dict) -> None:
    rows, notes = [], []
    for mode, entry in payload["results"].items():
        if entry.get("status") != "ok":
            rows.append([mode, entry.get("status", "").split(":")[0], None, None, None, None, None, None, None])
            notes.append(f"{mode}: {entry.get('status')}")
            continue
        ips, frac = entry["images_per_s"], entry["fraction_of_gemm_bound"]
        products = entry.get("fraction_of_model_products_bound")
        rows.append([mode, ips["replab"], ips["reference"], entry["ratio_replab_over_reference"],
                     entry["achieved_flops_per_s"]["replab"] / 1e9, entry["gemm_peak_flops_per_s"] / 1e9,
                     f"{frac['replab']:.1%} / {frac['reference']:.1%}",
                     f"{entry['model_products_fraction_of_peak']:.1%}" if products else "-",
                     f"{products['replab']:.1%} / {products['reference']:.1%}" if products else "-"])
    s = payload["settings"]
    common.print_table(f"ViT training step (batch {s['batch_size']}, {s['model']['num_layers']} layers, "
                f"{payload['parameters']['replab']:,} parameters, {payload['flops_per_step'] / 1e9:.1f} GFLOP/step, "
                f"device {s['device']}, {s['threads']} threads)",
                ["mode", "replab img/s", "reference img/s", "ratio", "replab GFLOP/s", "GEMM peak GFLOP/s",
                 "GEMM-bound replab / ref", "products alone", "products-bound replab / ref"], rows)
    print("GEMM-bound: (step FLOPs / step time) / square-product peak; products alone: the step's own products "
          "timed alone, as a fraction of that peak; products-bound: their time / the step time")
    for note in notes:
        print(note)
    for precision, rec in payload["recommended_default"].items():
        print(f"recommended {precision} default: {rec['mode']} ({rec['why']})")
    common.print_targets(payload["targets"])


def main(argv: list[str] | None = None) -> int:
    return common.run_main(build_parser, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
