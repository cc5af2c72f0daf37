"""One LSTM language-model training step: replab's training path against the straightforward reference.

Usage::

    python -m benchmarks.lstm_step [--device auto] [--repeats 5] [--warmup 1] [--batch-size 16]
        [--sequence-length 256] [--modes fp32,bf16] [--padding 0.0] [--learn-embeddings] [--threads N]
        [--force-bf16] [--profile] [--out bench-results/lstm_step.json] [--quick]
    python -m benchmarks lstm_step [same options]

The model is the spec's ``LSTM()`` (vocabulary 40,479, embeddings 768 frozen and tied to the output projection,
hidden 512, 1 layer), on a fixed batch of random token ids (B=16 x T=256), optimiser ``torch.optim.Adam``
(lr 1e-3). Every sequence starts from zero hidden states. Contestants:

* replab: the trainer's path, ``model(source, targets=, mask=)`` -> ``sequence_nll`` (the output projection fused
  with the cross-entropy and the loss, chunk by chunk of rows: no (B*T, V) tensor, gradients computed in the
  same pass);
* reference: ``model.forward`` (full ``log_softmax`` over the vocabulary) -> ``model.loss`` (gather, masked
  per-sequence mean), the spec's straightforward path.

Both losses are checked equal on the benchmark's batch. Modes: ``fp32`` and ``bf16`` (``torch.autocast``).
Throughput counts predicted tokens (mask 1) per second. ``--padding F`` zero-pads the last fraction ``F`` of
every other sequence (the default Wikitext-2 windows have no padding), which replab's path skips.

For context the step's matrix-product FLOPs are counted analytically (LSTM gates ``2 * 4Hd * (E + Hd)``, the
classifier ``2 * Hd * E + 2 * E * V`` per token; 3x for training, 2x for the output projection when the
embeddings are frozen: no weight gradient) and set against a square matrix product timed in the same rounds:
the output projection alone is ~90% of the work, which bounds what fusing the cross-entropy can gain:
``ratio_ceiling_at_gemm_bound`` is the ratio replab would reach if its step took exactly the time of its
matrix products at the measured peak (reference time / GEMM-bound time).
A bf16 mode on a CPU without bf16 matrix instructions is skipped (see ``benchmarks.vit_step``).

The modes are timed alternating, round by round, in one process: ``bf16_speedup_over_fp32`` is the median of
the per-round ratios of the fp32 and bf16 replab steps. The bf16 target: the step at 50 % or more of the bf16
matrix-product bound (its matrix-product FLOPs at the bf16 square-product peak). ``--profile`` then profiles one
replab step per mode: the operations with the most self time, and how much of the step is not matrix products.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks import common
from replab.models.lstm import LSTM

NAME = "lstm_step"
MODES = ("fp32", "bf16")
TARGET_RATIO = 1.3
TARGET_BF16_BOUND = 0.5  # bf16 step at >= 50 % of the bf16 matrix-product bound


def training_flops(model: LSTM, tokens: int) -> float:
    """Analytic matrix-product FLOPs of one training step over ``tokens`` positions (see the module docstring)."""
    e, hd, v = model.embedding_size, model.hidden_size, model.vocabulary_size
    gates = sum(2 * 4 * hd * ((e if layer == 0 else hd) + hd) for layer in range(model.num_layers))
    projection_passes = 3.0 if model.embedding.weight.requires_grad else 2.0
    return tokens * (3.0 * (gates + 2 * hd * e) + projection_passes * 2 * e * v)


def make_batch(model: LSTM, batch: int, length: int, padding: float, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.vocabulary_size, (batch, length + 1), generator=generator)
    source, target = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    mask = torch.ones(batch, length)
    cut = length - int(round(padding * length))
    if cut < length:
        mask[::2, cut:] = 0
        source[::2, cut:] = 0
        target[::2, cut:] = 0
    return source.to(device), target.to(device), mask.to(device)


def make_steps(model: LSTM, source, target, mask, amp_dtype):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    device_type = source.device.type
    batch = source.shape[0]

    def autocast():
        return torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)

    def replab_loss():
        with autocast():
            loss, _ = model(source, targets=target, mask=mask)
            return loss

    def reference_loss():
        with autocast():
            log_probas, _ = model(source, model.initial_states(batch, source.device))
            return model.loss(log_probas, target, mask)

    def step(loss_fn):
        def run():
            loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    return {"replab": step(replab_loss), "reference": step(reference_loss)}, replab_loss, reference_loss


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0], batch_size=16, repeats=5, warmup=1)
    parser.add_argument("--sequence-length", type=int, default=256, help="tokens per sequence (default 256)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of fp32, bf16")
    parser.add_argument("--padding", type=float, default=0.0,
                        help="fraction of every other sequence zero-padded at its end (default 0)")
    parser.add_argument("--learn-embeddings", action="store_true",
                        help="train the (tied) embeddings too: the fused loss then also computes their gradient")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, profile one replab step per mode (torch.profiler): the operations "
                             "taking the most time, and the share of the step outside matrix products")
    common.add_force_bf16(parser)
    return parser


# Operations that are matrix products (their self time is the step's "matrix-product time" in the profile).
MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul",
                   "aten::linear", "aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward")


def profile_step(step, rows: int = 12) -> dict:
    """One call of ``step`` under ``torch.profiler``: its wall seconds, the ``rows`` operations with the most self
    time, and the self time in matrix products (``MATRIX_PRODUCTS``, the LSTM's fused recurrence kernels
    included) against the rest."""
    from torch.profiler import ProfilerActivity, profile  # loads the Kineto profiler: only --profile needs it

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        begin = time.perf_counter()
        step()
        seconds = time.perf_counter() - begin
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    products = sum(e.self_cpu_time_total for e in events if e.key in MATRIX_PRODUCTS) / 1e6
    return {
        "step_s": seconds, "self_s": total, "matrix_products_s": products, "other_s": total - products,
        "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in events[:rows]],
    }


def run(args: argparse.Namespace) -> dict:
    device = common.setup(args)
    modes = common.parse_modes(args.modes, MODES)
    if not 0.0 <= args.padding < 1.0:
        raise SystemExit("error: --padding must be in [0, 1)")
    model_args = {"learn_embeddings": args.learn_embeddings}
    batch, length = args.batch_size, args.sequence_length
    if args.quick:
        model_args.update(vocabulary_size=1000, embedding_size=32, hidden_size=24)
        batch, length = min(batch, 4), min(length, 16)
    info = common.machine_info(device)
    common.log(f"{NAME}: device {device}, {torch.get_num_threads()} threads, batch {batch} x {length}, modes {modes}")

    peaks = {name: common.GemmPeak(device, torch.float32 if name == "fp32" else torch.bfloat16,
                            size=256 if args.quick else None)
             for name in sorted(set(modes) | {"fp32"})}
    bf16_skip = common.bf16_skip(peaks, device, args.force_bf16)

    # every mode's model, batch and steps first, so that the modes are timed alternating, round by round
    results, contestants, flops, tokens = {}, {}, None, None
    for mode in modes:
        entry: dict = {}
        results[mode] = entry
        if mode == "bf16" and bf16_skip:
            entry["status"] = bf16_skip
            common.log(f"{mode}: {bf16_skip}")
            continue
        torch.manual_seed(0)
        model = LSTM(**model_args).to(device)
        source, target, mask = make_batch(model, batch, length, args.padding, device)
        tokens = float(mask.sum())
        flops = training_flops(model, batch * length)
        amp_dtype = torch.bfloat16 if mode == "bf16" else None
        steps, replab_loss, reference_loss = make_steps(model, source, target, mask, amp_dtype)
        try:
            with torch.no_grad():
                ours, ref = float(replab_loss()), float(reference_loss())
            for step in steps.values():
                step()
        except Exception as error:  # e.g. no bf16 LSTM kernel on this device: a result, not a crash
            entry["status"] = f"failed: {common.first_line(error)}"
            common.log(f"{mode}: {entry['status']}")
            continue
        entry.update(status="ok", loss={"replab": ours, "reference": ref, "abs_difference": abs(ours - ref)})
        contestants.update({f"{mode}/{name}": fn for name, fn in steps.items()})
        contestants[f"{mode}/gemm_peak"] = peaks[mode]
    timed = [m for m in modes if results[m].get("status") == "ok"]
    common.log(f"timing {args.repeats} rounds of {', '.join(timed)} alternating, after {args.warmup} warm-up calls")
    seconds = common.interleaved(contestants, device, args.repeats, args.warmup, common.log) if contestants else {}
    for mode in timed:
        entry = results[mode]
        own = {name: seconds[f"{mode}/{name}"] for name in ("replab", "reference", "gemm_peak")}
        peak_rates = [peaks[mode].flops / s for s in own["gemm_peak"]]
        entry.update({
            "step_s": {k: common.median(own[k]) for k in ("replab", "reference")},
            "tokens_per_s": {k: tokens / common.median(own[k]) for k in ("replab", "reference")},
            "ratio_replab_over_reference": common.median(common.paired(own["reference"], own["replab"],
                                                         lambda r, o: r / o)),
            "gemm_peak_flops_per_s": common.median(peak_rates),
            # the step's matrix-product FLOPs at the peak of a large square product of the mode's dtype, measured
            # in the same rounds, over the measured step: the fraction of the matrix-product bound reached
            "fraction_of_gemm_bound": {
                k: common.median(common.paired(own[k], peak_rates, lambda s, p, f=flops: f / s / p))
                for k in ("replab", "reference")
            },
            # the ratio replab would reach if its step took exactly the time of its matrix products at the peak
            "ratio_ceiling_at_gemm_bound": common.median(common.paired(own["reference"], peak_rates,
                                                         lambda r, p, f=flops: r / (f / p))),
            "timings": {k: common.timing_summary(v) for k, v in own.items()},
        })
    speedup = None
    if {"fp32", "bf16"} <= set(timed):  # paired round by round: the two modes ran in the same rounds
        speedup = common.median(common.paired(seconds["fp32/replab"], seconds["bf16/replab"], lambda a, b: a / b))
    if args.profile:
        for mode in timed:
            common.log(f"{mode}: profiling one replab step")
            results[mode]["profile"] = profile_step(contestants[f"{mode}/replab"])

    return {
        "benchmark": NAME,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.finish_machine_info(info),
        "settings": {
            "device": str(device), "batch_size": batch, "sequence_length": length, "repeats": args.repeats,
            "warmup": args.warmup, "modes": modes, "quick": args.quick, "padding": args.padding,
            "learn_embeddings": args.learn_embeddings, "model": model_args, "optimizer": "Adam(lr=1e-3)",
            "threads": torch.get_num_threads(), "gemm_peak": {k: v.describe() for k, v in peaks.items()},
        },
        "flops_per_step": flops,
        "bf16_speedup_over_fp32": speedup,
        "results": results,
        "targets": _targets(modes, results, speedup),
    }


def _targets(modes: list[str], results: dict, speedup: float | None) -> list[dict]:
    targets = []
    for mode in modes:
        entry = results[mode]
        note = "" if entry.get("status") == "ok" else entry.get("status", "")
        ratio = entry.get("ratio_replab_over_reference")
        if mode == "fp32":
            targets.append(common.target_row("fp32 ratio replab/reference", ratio, TARGET_RATIO, unit="x", note=note))
            continue
        bound = entry.get("fraction_of_gemm_bound", {}).get("replab")
        targets.append(common.target_row(f"{mode} fraction of the {mode} matrix-product bound", bound,
                                         TARGET_BF16_BOUND, note=note))
        targets.append(common.target_row(f"{mode} ratio replab/reference (no target set)", ratio, 1.0, unit="x",
                                         note=note or "informative"))
    if "bf16" in modes and "fp32" in modes:
        targets.append(common.target_row("bf16 step speed-up over fp32 (no target set)", speedup, 1.0, unit="x",
                                         note="" if speedup else results["bf16"].get("status", "")))
    return targets


def report(payload: dict) -> None:
    rows, notes = [], []
    for mode, entry in payload["results"].items():
        if entry.get("status") != "ok":
            rows.append([mode, entry.get("status", "").split(":")[0], None, None, None, None, None, None])
            notes.append(f"{mode}: {entry.get('status')}")
            continue
        tps, frac = entry["tokens_per_s"], entry["fraction_of_gemm_bound"]
        rows.append([mode, entry["step_s"]["replab"], tps["replab"], tps["reference"],
                     entry["ratio_replab_over_reference"], entry["ratio_ceiling_at_gemm_bound"],
                     f"{frac['replab']:.1%} / {frac['reference']:.1%}", entry["loss"]["abs_difference"]])
    s = payload["settings"]
    flops = payload["flops_per_step"]
    machine = payload["machine"]
    common.print_table(f"LSTM training step (batch {s['batch_size']} x {s['sequence_length']} tokens, "
                       f"{(flops or 0) / 1e9:.0f} GFLOP/step, device {s['device']} "
                       f"({machine.get('cpu_capability')}), {s['threads']} threads)",
                       ["mode", "replab s/step", "replab tokens/s", "reference tokens/s", "ratio",
                        "ratio ceiling (GEMM-bound)", "GEMM-bound replab / ref", "|loss difference|"], rows)
    if payload.get("bf16_speedup_over_fp32"):
        print(f"bf16 step speed-up over fp32 (paired rounds): {payload['bf16_speedup_over_fp32']:.2f}x")
    for note in notes:
        print(note)
    for mode, entry in payload["results"].items():
        prof = entry.get("profile")
        if prof:
            common.print_table(
                f"{mode} profile of one replab step: {prof['step_s']:.2f} s; matrix products and the LSTM kernels "
                f"{prof['matrix_products_s']:.2f} s, everything else {prof['other_s']:.2f} s (self time)",
                ["operation", "self s", "calls"], [[t["op"], t["self_s"], t["calls"]] for t in prof["top"]])
    common.print_targets(payload["targets"])


def main(argv: list[str] | None = None) -> int:
    return common.run_main(build_parser, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
