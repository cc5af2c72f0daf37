"""``python -m benchmarks NAME [options]``: run one of the benchmarks (the options are the benchmark's own).

    python -m benchmarks vit_step [--device cuda] [--modes fp32,bf16] ...  ViT-6 step vs nn.TransformerEncoderLayer
    python -m benchmarks lstm_step [...]                 LSTM step: fused cross-entropy vs log_softmax
    python -m benchmarks cifar_pipeline [...]            batched augmentation vs per-image PIL
    python -m benchmarks NAME --help                     that benchmark's options

From a checkout of the repository (``benchmarks/`` is not part of the installed package).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks import BENCHMARKS


def _name(text: str) -> str:
    name = text.replace("-", "_")
    if name not in BENCHMARKS:
        raise argparse.ArgumentTypeError(f"unknown benchmark {text!r}; choose from {', '.join(BENCHMARKS)}")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", type=_name, metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="...",
                        help="the benchmark's options (see python -m benchmarks NAME --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark NAME with the remaining arguments; results in bench-results/NAME.json."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"benchmarks.{args.benchmark}")
    return module.main(list(args.bench_args))


if __name__ == "__main__":
    sys.exit(main())
