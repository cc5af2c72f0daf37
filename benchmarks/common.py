"""What every benchmark shares: options, interleaved timing, the matrix-product peak, machine facts, output.

Timing rules: every contestant of a comparison is timed in the same process, interleaved round by round (the
order rotates every round so none always runs first), after warm-up calls; CUDA calls are timed with events
after a synchronisation, other devices with ``time.perf_counter`` around a call that ends with a
synchronisation. Ratios are the median of the per-round ratios (paired measurements), so slow drifts of the
machine's load cancel out; nothing is ever compared across runs.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from replab import system
from replab.arguments import positive_int
from replab.runlog import atomic_write_json
from replab.system import cpu_flags, native_bf16_cpu, synchronize

DEFAULT_OUT_DIR = Path("bench-results")


# ------------------------------------------------------------------------------------------------ options
def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def base_parser(name: str, description: str, *, batch_size: int, repeats: int, warmup: int) -> argparse.ArgumentParser:
    """The options every benchmark has: device, repeats, warm-up, batch size, output file, quick, threads."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help=f"timed rounds per comparison, after warm-up (default {repeats}; --quick: 2)")
    parser.add_argument("--warmup", type=_non_negative_int, default=None,
                        help=f"untimed calls of each contestant first (default {warmup}; --quick: 1)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"default {batch_size}")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR / f"{name}.json"),
                        help=f"JSON results file (default {DEFAULT_OUT_DIR / (name + '.json')})")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads before measuring (default: torch's own choice; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke setting (small model and batch, 2 rounds, 1 thread): checks that the "
                             "benchmark runs, its numbers mean nothing")
    parser.set_defaults(default_repeats=repeats, default_warmup=warmup)
    return parser


def resolve_common(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the defaults that depend on ``--quick`` and apply ``--threads``."""
    if args.repeats is None:
        args.repeats = 2 if args.quick else args.default_repeats
    if args.warmup is None:
        args.warmup = 1 if args.quick else args.default_warmup
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def setup(args: argparse.Namespace) -> torch.device:
    """What every benchmark does first: ``resolve_common`` (``--quick`` defaults, ``--threads``), then the device."""
    resolve_common(args)
    return pick_device(args.device)


def add_force_bf16(parser: argparse.ArgumentParser, what: str = "bf16") -> None:
    parser.add_argument("--force-bf16", action="store_true",
                        help=f"run {what} even where bf16 matrix products measure slower than half of fp32")


def parse_modes(text: str, known: tuple[str, ...]) -> list[str]:
    """``--modes``: the comma-separated modes, each one of ``known`` (else exit with an error)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(known))
    if unknown:
        raise SystemExit(f"error: unknown modes {unknown}; choose from {', '.join(known)}")
    return modes


def bf16_skip(peaks: dict, device: torch.device, force: bool, runs: str = "it") -> str | None:
    """Why the bf16 mode(s) are skipped (None: they run): on a CPU whose bf16 matrix-product peak (``peaks``:
    ``GemmPeak`` per ``fp32``/``bf16``) measures under half the fp32 one, unless ``--force-bf16``."""
    if "bf16" not in peaks or device.type != "cpu" or force:
        return None
    fp32_rate, bf16_rate = (peaks[k].calibration_flops_per_s for k in ("fp32", "bf16"))
    if bf16_rate >= 0.5 * fp32_rate:
        return None
    return (f"skipped: bf16 matrix products run a slow fallback on this CPU ({bf16_rate / 1e9:.2f} "
            f"GFLOP/s vs {fp32_rate / 1e9:.1f} fp32; bf16 instructions: "
            f"{'yes' if native_bf16_cpu() else 'none'}); --force-bf16 runs {runs} anyway")


def pick_device(name: str) -> torch.device:
    try:
        return system.pick_device(name)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


# ------------------------------------------------------------------------------------------------- timing
def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes on ``device`` (CUDA: events, after synchronising)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    synchronize(device)
    begin = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - begin


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int,
                progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Time every function ``repeats`` times, round by round, after ``warmup`` untimed calls of each.

    Round ``r`` calls the functions in the order rotated by ``r``; a function with a ``prepare`` attribute has it
    called, untimed, right before each timed call. Returns the seconds of every round, per name.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            prepare = getattr(fns[name], "prepare", None)
            if prepare is not None:
                prepare()
            seconds[name].append(time_call(fns[name], device))
        if progress:
            progress(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {seconds[n][-1]:.3f}s" for n in names))
    return seconds


def median(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else float("nan")


def paired(a: list[float], b: list[float], op: Callable[[float, float], float]) -> list[float]:
    """``op(a[r], b[r])`` for every round ``r``."""
    return [op(x, y) for x, y in zip(a, b, strict=True)]


def timing_summary(seconds: list[float]) -> dict:
    return {"median_s": median(seconds), "min_s": min(seconds), "max_s": max(seconds), "rounds_s": seconds}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- GEMM peak
class GemmPeak:
    """A square matrix product, sized and repeated so that one call is long enough to time.

    ``size`` defaults to 8192 on CUDA and 2048 elsewhere; on a device where one product takes longer than
    ``max_seconds`` (a data type without fast kernels) the size is halved (down to 256) so that measuring the peak
    stays affordable. ``inner`` products per call make a call last at least ``min_seconds``. ``flops`` is the
    work of one call: ``2 n^3 inner``.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, size: int | None = None,
                 min_seconds: float | None = None, max_seconds: float = 0.5):
        self.device, self.dtype = device, dtype
        size = size or (8192 if device.type == "cuda" else 2048)
        min_seconds = min_seconds if min_seconds is not None else (0.02 if device.type == "cuda" else 0.05)
        generator = torch.Generator(device="cpu").manual_seed(0)
        while True:
            a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
            b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
            self.a, self.b, self.inner = a, b, 1
            self()  # first call: library initialisation
            seconds = time_call(self, device)
            if seconds <= max_seconds or size <= 256:
                break
            size //= 2
        self.size = size
        self.inner = max(1, math.ceil(min_seconds / max(seconds, 1e-9)))
        self.flops = 2.0 * size**3 * self.inner
        self.calibration_flops_per_s = 2.0 * size**3 / max(seconds, 1e-12)

    def __call__(self) -> None:
        for _ in range(self.inner):
            torch.mm(self.a, self.b)

    def describe(self) -> dict:
        return {"dtype": str(self.dtype).replace("torch.", ""), "size": self.size, "products_per_call": self.inner,
                "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if self.device.type == "cuda" else None}


# --------------------------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict:
    """Versions, machine, device, the speed settings set (``system.environment``: CPU capability, OMP_WAIT_POLICY...)
    and the load average (other processes share the CPU: see ``load_average``)."""
    info = system.environment(device)
    flags = cpu_flags()
    info.update({
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_instructions": sorted({"avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2"} & flags),
        "load_average_start": _load_average(),
    })
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                       "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count}
    return info


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def finish_machine_info(info: dict) -> dict:
    info["load_average_end"] = _load_average()
    return info


# ---------------------------------------------------------------------------------------------- output
def status(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "NOT met"


def target_row(name: str, value: float | None, target: float, higher_is_better: bool = True, unit: str = "",
               note: str = "") -> dict:
    return {"name": name, "value": value, "target": target, "comparison": ">=" if higher_is_better else "<=",
            "unit": unit, "status": status(value, target, higher_is_better), "note": note}


def format_number(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    cells = [[format_number(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def print_targets(targets: list[dict]) -> None:
    rows = [[t["name"], t["value"], f"{t['comparison']} {format_number(t['target'])}{t['unit']}", t["status"],
             t.get("note", "")[:60]] for t in targets]
    print_table("Targets", ["metric", "value", "target", "status", "note"], rows)


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """The payload as JSON, written atomically (NaN and infinities become null)."""
    atomic_write_json(Path(path), payload)
    return Path(path)


def run_main(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], dict],
             report: Callable[[dict], None], argv: list[str] | None = None) -> int:
    """The ``main`` of every benchmark: parse, run, print the table, write the JSON.

    ``--threads`` (and ``--quick``, which means one thread) apply for the run only: called in-process (``replab
    bench``, the tests), the caller's thread count is restored afterwards, as it changes floating-point results.
    """
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        payload = run(args)
    finally:
        torch.set_num_threads(threads)
    report(payload)
    path = write_json(args.out, payload)
    print(f"\nwrote {path}")
    return 0


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
