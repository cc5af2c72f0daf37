"""``replab bench NAME [options]``: run one of the benchmarks (the options are the benchmark's own).

    replab bench vit_step [--device cuda] [--modes fp32,bf16] ...     ViT-6 training step vs nn.TransformerEncoderLayer
    replab bench lstm_step [...]                                     LSTM step: fused cross-entropy vs log_softmax
    replab bench cifar_pipeline [...]                                batched augmentation vs per-image PIL
    replab bench NAME --help                                         that benchmark's options
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks import BENCHMARKS


def _name(text: str) -> str:
    name = text.replace("-", "_")
    if name not in BENCHMARKS:
        raise argparse.ArgumentTypeError(f"unknown benchmark {text!r}; choose from {', '.join(BENCHMARKS)}")
    return name


def run_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"benchmarks.{args.benchmark}")
    return module.main(list(args.bench_args))


def add_bench_command(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``replab`` command's subparsers (handler: ``run_bench``)."""
    bench = subparsers.add_parser(
        "bench", help=f"run a benchmark ({', '.join(BENCHMARKS)}); results in bench-results/NAME.json",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("benchmark", type=_name, metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="...",
                       help="the benchmark's options (see replab bench NAME --help)")
    bench.set_defaults(handler=run_bench)
    return bench
