"""The ``replab`` command (also ``python -m replab``): its parser, every subcommand registered the same way, and
``main``.

    replab configs [--json]                 the registry of experiments, every hyperparameter resolved
    replab train ID [overrides]             one experiment into runs/ID/
    replab grid {lstm,vit,cnn,all} [...]    experiments one after another, skipping completed ones, resuming others
    replab train/grid ... --dry-run         time a few real steps: estimated time per epoch, in total, peak memory
    replab data {check,download}            what data is where; download what can be (``replab.data.commands``)
    replab generate RUN_DIR [...]           text sampled from a trained LSTM (``replab.generate``)
    replab report [RUNS_DIR ...]            the report of run folders (``replab.report.commands``)
    replab reproduce [--quick] [...]        the grids, then their report (``replab.reproduce``)
    replab --version                        the version

Each subcommand is one ``Command`` of ``COMMANDS``: its name, its help line, the function that adds its arguments
and the handler that runs it (``handler(args) -> exit code``), both beside the code they drive. Usage errors
(argparse's included) are one line on standard error, ``replab: error: <problem>`` with the fix or a pointer to the
command's ``--help``; see ``replab.console`` for what goes where (and under torchrun). Exit codes
(``replab.exits``): 0 success, 1 a run diverged or failed, 2 bad input (nothing created), 130 interrupted (Ctrl-C
or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import replab
from replab import reproduce
from replab.arguments import (
    DATA_DIR_HELP,
    DEVICE_HELP,
    KEEP_CHECKPOINTS_HELP,
    PROGRESS_HELP,
    integer,
    non_negative_float,
    number,
    positive_int,
)
from replab.console import configure_logging, error_line, main_process_output, tagged
from replab.data import commands as data_commands
from replab.data.wikitext2 import Wikitext2
from replab.datadir import resolve_data_dir
from replab.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from replab.experiments import AMP_MODES, BLOCKS, EXPERIMENTS, GRIDS, OPTIMIZERS, RunSettings
from replab.generate import CHECKPOINTS, PROMPT_TOKENS, SampleSettings, load_lstm, sample
from replab.report import commands as report_commands
from replab.runner import configured, plan_grid, print_estimates, run_grid, run_one
from replab.text import GPT1Tokenizer


class Parser(argparse.ArgumentParser):
    """argparse with replab's error style: one line that names the problem and points to ``--help`` (no usage
    dump), raised as ``UsageError`` so that ``main`` prints it like every other bad input and returns 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # the subcommand's options are what the user got wrong: point to its help
            command = getattr(parsed, "command", None)
            self.prog = f"{self.prog} {command}" if command else self.prog
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def add_run_options(parser: argparse.ArgumentParser) -> None:
    hp = parser.add_argument_group("hyperparameter overrides (default: the experiment's value, see replab configs)")
    hp.add_argument("--epochs", type=positive_int, metavar="N",
                    help="training epochs (default: 10; the CNN baselines 180)")
    hp.add_argument("--batch-size", type=positive_int, metavar="N",
                    help="global batch size in sequences (LSTM) or images (ViT, CNN), split across DDP ranks "
                    "(default: 16 LSTM, 128 ViT and CNN)")
    hp.add_argument("--lr", type=number, metavar="LR",
                    help="initial learning rate (default: 1e-3 LSTM, 3e-4 ViT; CNN baselines 1e-3 or 0.1)")
    hp.add_argument("--optimizer", choices=OPTIMIZERS,
                    help="adam (no weight decay), adamw, sgd (no momentum) or momentum (SGD with momentum) "
                    "(default: the experiment's, see replab configs)")
    hp.add_argument("--weight-decay", type=non_negative_float, metavar="WD",
                    help="weight decay (default: 5e-4 for adamw, sgd and momentum, 0 for adam; CNN baselines 1e-4)")
    hp.add_argument("--momentum", type=non_negative_float, metavar="M",
                    help="SGD momentum, with --optimizer momentum only (default: 0.9)")
    hp.add_argument("--layers", type=positive_int, dest="num_layers", metavar="N",
                    help="LSTM layers or transformer blocks (default: the experiment's, 1-4 LSTM, 2-6 ViT)")
    hp.add_argument("--block", choices=BLOCKS, help="ViT block: layer norm before (prenorm) or after (postnorm) "
                    "each sublayer (default: prenorm; vit-7 postnorm)")
    hp.add_argument("--seed", type=integer, metavar="S",
                    help="seed of the initial weights, the data order and the augmentation (default: 42)")
    run = parser.add_argument_group("how the run executes")
    run.add_argument("--device", default="auto", help=DEVICE_HELP)
    run.add_argument("--amp", choices=AMP_MODES, default="none",
                     help="autocast precision: none (fp32), bf16 (also on CPUs) or fp16 (CUDA) (default: none)")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (default: off)")
    run.add_argument("--attention", choices=("primitive", "sdpa"), default="primitive",
                     help="ViT attention: from primitives or F.scaled_dot_product_attention (default: primitive)")
    run.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    run.add_argument("--embeddings", metavar="FILE", help="LSTM: GPT-1 token embeddings .npz (frozen, tied), or "
                     "'none' to learn them (default: <data dir>/embeddings.npz where present, else learned)")
    run.add_argument("--out", default="runs", metavar="DIR",
                     help="runs folder; each run writes DIR/<experiment id>/ (default: runs)")
    run.add_argument("--limit-train-batches", type=positive_int, metavar="N",
                     help="train on at most N batches per epoch (default: all)")
    run.add_argument("--limit-eval-batches", type=positive_int, metavar="N",
                     help="evaluate on at most N batches (default: all)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its last checkpoint (end of an epoch, or inside one)")
    run.add_argument("--checkpoint-minutes", type=non_negative_float, default=10.0, metavar="M",
                     help="also save a checkpoint inside an epoch about every M minutes of training, so --resume "
                     "loses at most that much; 0: only at the end of each epoch (default: 10)")
    run.add_argument("--keep-checkpoints", action="store_true", help=KEEP_CHECKPOINTS_HELP)
    run.add_argument("--overwrite", action="store_true", help="delete an existing run and train it again")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=PROGRESS_HELP)
    run.add_argument("--dry-run", action="store_true",
                     help="time a few real training steps and print the estimated time and memory; write nothing")


HYPERPARAMETERS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "num_layers", "block", "seed")
SETTINGS = ("device", "amp", "compile", "attention", "data_dir", "embeddings", "out", "limit_train_batches",
            "limit_eval_batches", "resume", "overwrite", "progress", "checkpoint_minutes", "keep_checkpoints")


DESCRIPTION = "Train, evaluate and report the study: an LSTM language model on Wikitext-2, Vision Transformers and " \
    "CNN baselines on CIFAR-10."
EPILOG = "Exit codes: 0 success, 1 a run diverged or failed, 2 bad input (nothing created), 130 interrupted " \
    "(Ctrl-C or SIGTERM). Each command has its own --help."


def run_settings(args) -> RunSettings:
    """The ``RunSettings`` of ``train``/``grid``'s options, validated; a ``UsageError`` names what is wrong."""
    try:
        return RunSettings(**{k: getattr(args, k) for k in SETTINGS})
    except ValueError as error:
        raise UsageError(str(error)) from None


def hyperparameters(args) -> dict:
    """The hyperparameter overrides of ``train``/``grid`` (``None``: the experiment's own value)."""
    return {k: getattr(args, k) for k in HYPERPARAMETERS}


def cmd_configs(args) -> int:
    rows = [EXPERIMENTS[k].resolved().to_dict() for k in EXPERIMENTS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    header = f"{'id':<18}{'task':<6}{'layers':>7}  {'block':<10}{'optimizer':<10}{'lr':>8}{'wd':>9}{'mom':>5}" \
             f"{'batch':>7}{'epochs':>7}"
    print(header)
    for r in rows:
        layers = r.get("num_layers", "-")  # a model without layers (the CNNs) has none
        print(f"{r['id']:<18}{r['task']:<6}{layers:>7}  {r.get('block', ''):<10}{r['optimizer']:<10}"
              f"{r['lr']:>8g}{r['weight_decay']:>9g}{r['momentum']:>5g}{r['batch_size']:>7}{r['epochs']:>7}")
    return EXIT_OK


def cmd_train(args) -> int:
    experiment = configured(args.id, hyperparameters(args))
    settings = run_settings(args)
    if args.dry_run:
        return print_estimates([(experiment, settings)])
    return run_one(experiment, settings)


def cmd_grid(args) -> int:
    settings = run_settings(args)
    if args.dry_run:
        return print_estimates(plan_grid(GRIDS[args.grid], settings, hyperparameters(args)))
    return run_grid(GRIDS[args.grid], settings, hyperparameters(args))


def cmd_generate(args) -> int:
    settings = SampleSettings(args.tokens, args.temperature, args.top_k, args.seed, args.greedy)
    try:
        settings.validate()
        model, record = load_lstm(args.run_dir, args.checkpoint)
        tokenizer = GPT1Tokenizer.from_data_dir(args.data_dir)
        prompt = args.prompt
        if prompt is None:
            validation = Wikitext2(resolve_data_dir(args.data_dir), split="validation")
            prompt = validation.opening_text(tokenizer, PROMPT_TOKENS)
        result = sample(model, prompt, settings, tokenizer)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(f"{Path(args.run_dir).name}, {args.checkpoint}.pt (epoch {record.get('epoch', '?')}): "
          f"{settings.describe()}", file=sys.stderr)
    print(result.text)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ the commands
def _configs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help=f"experiment id: {', '.join(EXPERIMENTS)} (replab configs lists "
                        "their hyperparameters)")
    add_run_options(parser)


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", choices=sorted(GRIDS), metavar="GRID",
                        help="which experiments, one after another: " + "; ".join(
                            f"{name}: {', '.join(GRIDS[name]) if name != 'all' else 'lstm, then vit'}"
                            for name in sorted(GRIDS)))
    add_run_options(parser)


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="an LSTM run folder, e.g. runs/lstm-1")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                        help="best.pt or last.pt, which a completed run keeps only if trained with --keep-checkpoints "
                        "(default: best)")
    parser.add_argument("--prompt", help="text to continue (default: the start of the first validation article, "
                        "which needs the data folder)")
    parser.add_argument("--tokens", type=int, default=SampleSettings.tokens, help="tokens to generate (default: 60)")
    parser.add_argument("--temperature", type=float, default=SampleSettings.temperature,
                        help="softmax temperature: below 1 sharper, above 1 flatter (default: 1)")
    parser.add_argument("--top-k", type=int, default=SampleSettings.top_k, help="sample among the k most likely "
                        "tokens (default: 0, all)")
    parser.add_argument("--seed", type=int, default=SampleSettings.seed, help="sampling seed (default: 0)")
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling (default: off)")
    parser.add_argument("--data-dir", help="data folder: GPT-1's vocabulary (gpt1-bpe/) and the default prompt "
                        "(default: $REPLAB_DATA, else ./data)")


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` defines its options, ``handler(args)`` runs it and returns the exit
    code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS = (
    Command("configs", "list the experiments with every resolved hyperparameter", _configs_arguments, cmd_configs),
    Command("train", "train one experiment", _train_arguments, cmd_train),
    Command("grid", "train a grid of experiments, skipping completed ones", _grid_arguments, cmd_grid),
    Command("data", "check or download the datasets", data_commands.add_arguments, data_commands.cmd_data),
    Command("report", "figures, tables and findings from run folders", report_commands.add_arguments,
            report_commands.cmd_report),
    Command("reproduce", "train the grids, resuming what finished, then the report", reproduce.add_arguments,
            reproduce.cmd_reproduce),
    Command("generate", "sample text from a trained LSTM run", _generate_arguments, cmd_generate),
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="replab", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on standard error")
    parser.add_argument("--version", action="version", version=f"replab {replab.__version__}",
                        help="print replab's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of the commands below (replab COMMAND --help: its options)")
    for command in COMMANDS:
        subparser = commands.add_parser(command.name, help=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``replab`` command: its exit code (``--help`` and ``--version`` exit 0 through ``SystemExit``)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(error_line(str(error)), file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.verbose)
    with main_process_output():
        try:
            return args.handler(args)
        except UsageError as error:
            print(error_line(str(error)), file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(tagged("replab: interrupted"), file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
