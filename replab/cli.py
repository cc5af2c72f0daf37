"""The ``replab`` command (also ``python -m replab``).

    replab configs [--json]                 the registry of experiments, every hyperparameter resolved
    replab train ID [overrides]             one experiment into runs/ID/
    replab grid {lstm,vit,cnn,all} [...]    experiments one after another, skipping completed ones, resuming others
    replab train/grid ... --dry-run         time a few real steps: estimated time per epoch, in total, peak memory
    replab data {check,download}            what data is where; download what can be (also GPT-1's files)
    replab generate RUN_DIR [...]           text sampled from a trained LSTM
    replab report / reproduce               see ``replab.report.commands``
    replab --version                        the version

Usage errors (argparse's included) are one line on standard error, ``replab: error: <problem>`` with the fix or a
pointer to the command's ``--help``; see ``replab.console`` for what goes where (and under torchrun).
Exit codes: 0 success, 1 a run diverged or failed, 2 bad input (nothing created), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import replab
from replab.console import configure_logging, error_line, main_process_output, tagged
from replab.experiments import (
    AMP_MODES,
    BLOCKS,
    EXPERIMENTS,
    GRIDS,
    OPTIMIZERS,
    RunSettings,
    get_experiment,
    with_overrides,
)
from replab.runner import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _train_one,
    plan_grid,
    print_estimates,
    run_grid,
)


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


def _number(text: str, kind: type, rule: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _float(text: str) -> float:
    return _number(text, float, "a number")


def _int(text: str) -> int:
    return _number(text, int, "an integer")


DEVICE_HELP = "auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps (default: auto)"
DATA_DIR_HELP = "data folder holding wikitext2/ and cifar10/ (default: $REPLAB_DATA, else ./data)"
PROGRESS_HELP = "tqdm progress bars (default: on when standard error is a terminal)"
KEEP_CHECKPOINTS_HELP = (
    "keep every checkpoint of a completed run with its full training state: best.pt, last.pt and previous.pt "
    "(0.4-0.5 GB each for an LSTM), needed only to train it further with --resume and more --epochs. Default: a "
    "completed run keeps best.pt alone, its weights only (about 136 MB for a 1-layer LSTM, 4-13 MB for a ViT), "
    "which is what test scores, replab generate and the report use; a run still training or interrupted always "
    "keeps what --resume needs")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    hp = parser.add_argument_group("hyperparameter overrides (default: the experiment's value, see replab configs)")
    hp.add_argument("--epochs", type=_positive_int, metavar="N",
                    help="training epochs (default: 10; the CNN baselines 180)")
    hp.add_argument("--batch-size", type=_positive_int, metavar="N",
                    help="global batch size in sequences (LSTM) or images (ViT, CNN), split across DDP ranks "
                    "(default: 16 LSTM, 128 ViT and CNN)")
    hp.add_argument("--lr", type=_float, metavar="LR",
                    help="initial learning rate (default: 1e-3 LSTM, 3e-4 ViT; CNN baselines 1e-3 or 0.1)")
    hp.add_argument("--optimizer", choices=OPTIMIZERS,
                    help="adam (no weight decay), adamw, sgd (no momentum) or momentum (SGD with momentum) "
                    "(default: the experiment's, see replab configs)")
    hp.add_argument("--weight-decay", type=_non_negative_float, metavar="WD",
                    help="weight decay (default: 5e-4 for adamw, sgd and momentum, 0 for adam; CNN baselines 1e-4)")
    hp.add_argument("--momentum", type=_non_negative_float, metavar="M",
                    help="SGD momentum, with --optimizer momentum only (default: 0.9)")
    hp.add_argument("--layers", type=_positive_int, dest="num_layers", metavar="N",
                    help="LSTM layers or transformer blocks (default: the experiment's, 1-4 LSTM, 2-6 ViT)")
    hp.add_argument("--block", choices=BLOCKS, help="ViT block: layer norm before (prenorm) or after (postnorm) "
                    "each sublayer (default: prenorm; vit-7 postnorm)")
    hp.add_argument("--seed", type=_int, metavar="S",
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
    run.add_argument("--limit-train-batches", type=_positive_int, metavar="N",
                     help="train on at most N batches per epoch (default: all)")
    run.add_argument("--limit-eval-batches", type=_positive_int, metavar="N",
                     help="evaluate on at most N batches (default: all)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its last checkpoint (end of an epoch, or inside one)")
    run.add_argument("--checkpoint-minutes", type=_non_negative_float, default=10.0, metavar="M",
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="replab", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on standard error")
    parser.add_argument("--version", action="version", version=f"replab {replab.__version__}",
                        help="print replab's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="one of the commands below (replab COMMAND --help: its options)")

    configs = commands.add_parser("configs", help="list the experiments with every resolved hyperparameter")
    configs.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")

    train = commands.add_parser("train", help="train one experiment")
    train.add_argument("id", metavar="ID", help=f"experiment id: {', '.join(EXPERIMENTS)} (replab configs lists "
                       "their hyperparameters)")
    _add_run_options(train)

    grid = commands.add_parser("grid", help="train a grid of experiments, skipping completed ones")
    grid.add_argument("grid", choices=sorted(GRIDS), metavar="GRID",
                      help="which experiments, one after another: " + "; ".join(
                          f"{name}: {', '.join(GRIDS[name]) if name != 'all' else 'lstm, then vit'}"
                          for name in sorted(GRIDS)))
    _add_run_options(grid)

    data = commands.add_parser("data", help="check or download the datasets")
    data.add_argument("action", choices=("check", "download"), metavar="ACTION",
                      help="check: what data is where, and whether it loads; download: fetch CIFAR-10 and GPT-1's "
                      "vocabulary (Wikitext-2 is the course's copy: not downloadable)")
    data.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    data.add_argument("--verify", action="store_true",
                      help="check: compare every file's MD5 with the official CIFAR-10 sums and the MD5SUMS lists")
    what = data.add_mutually_exclusive_group()
    what.add_argument("--embeddings", action="store_true",
                      help="download: GPT-1's token embeddings (embeddings.npz) and vocabulary instead of CIFAR-10")
    what.add_argument("--vocabulary", action="store_true",
                      help="download: only GPT-1's BPE vocabulary (gpt1-bpe/, for decoding token ids to text)")
    data.add_argument("--gpt1-url", "--embeddings-url", dest="gpt1_url", metavar="URL",
                      help="base URL of GPT-1's model/ folder, for the embeddings and the vocabulary (default: "
                      "$REPLAB_EMBEDDINGS_URL, else openai/finetune-transformer-lm on GitHub)")

    from replab.report.commands import add_report_commands

    add_report_commands(commands)

    from replab.generate import add_generate_command

    add_generate_command(commands)
    return parser


def _settings(args) -> RunSettings:
    settings = RunSettings(**{k: getattr(args, k) for k in SETTINGS})
    try:
        settings.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return settings


def _experiment(experiment_id: str, args):
    try:
        return with_overrides(get_experiment(experiment_id), **{k: getattr(args, k) for k in HYPERPARAMETERS})
    except (KeyError, ValueError) as error:
        raise UsageError(str(error).strip("'\"")) from None


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
    experiment, settings = _experiment(args.id, args), _settings(args)
    if args.dry_run:
        return print_estimates([(experiment, settings)])
    return _train_one(experiment, settings)


def cmd_grid(args) -> int:
    overrides = {k: getattr(args, k) for k in HYPERPARAMETERS}
    if args.dry_run:
        return print_estimates(plan_grid(GRIDS[args.grid], _settings(args), overrides))
    return run_grid(GRIDS[args.grid], _settings(args), overrides)


def cmd_data(args) -> int:
    from replab.data import resolve_data_dir
    from replab.data.cifar10 import download_cifar10, load_cifar10
    from replab.data.embeddings import EMBEDDINGS_FILE, check_embeddings, download_embeddings
    from replab.data.vocabulary import check_vocabulary, download_vocabulary
    from replab.data.wikitext2 import Wikitext2
    from replab.text.bpe import VOCABULARY_FOLDER

    root = resolve_data_dir(args.data_dir)
    if args.action == "download":
        datasets = not (args.embeddings or args.vocabulary)  # a plain `data download`: CIFAR-10 too
        try:
            if args.embeddings:
                print(f"GPT-1 embeddings: {download_embeddings(root, url=args.gpt1_url)}")
            if datasets:
                print(f"CIFAR-10: {download_cifar10(root / 'cifar10')}")
            print(f"GPT-1 vocabulary: {download_vocabulary(root, url=args.gpt1_url)}")
        except (ConnectionError, ValueError) as error:
            raise UsageError(str(error)) from None
        if datasets:
            print("Wikitext-2 (GPT-1 token ids) is the course's preprocessed copy and is not downloadable: "
                  f"put wiki.{{train,validation,test}}.npz in {root / 'wikitext2'}")
    ok = True
    for split in ("train", "validation", "test"):
        try:
            data = Wikitext2(root, split=split)
            print(f"wikitext2 {split:<10} ok: {len(data):>6} sequences, {data.num_predictions:>9,} predicted tokens")
        except (FileNotFoundError, ValueError) as error:
            ok = False
            print(f"wikitext2 {split:<10} {_problem(error)}: {error}")
    try:
        splits = load_cifar10(root)
        print(f"cifar10    ok: {len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test")
    except (FileNotFoundError, ValueError) as error:
        ok = False
        print(f"cifar10    {_problem(error)}: {error}")
    try:
        tokenizer = check_vocabulary(root)
        print(f"vocabulary ok: {tokenizer.vocabulary_size - 1:,} GPT-1 tokens, {tokenizer.num_merges:,} merges "
              f"({VOCABULARY_FOLDER}/)")
    except FileNotFoundError:
        print("vocabulary absent (needed only to turn token ids into text: `replab generate`, the report's LSTM "
              "samples): replab data download --vocabulary")
    except ValueError as error:
        ok = False
        print(f"vocabulary DAMAGED: {error}")
    embeddings = root / EMBEDDINGS_FILE
    if not embeddings.exists():
        print("embeddings absent (optional; without them the LSTM learns its embeddings): "
              "replab data download --embeddings")
    else:
        try:
            rows, width = check_embeddings(embeddings)
            print(f"embeddings ok: {rows:,} x {width} GPT-1 token embeddings ({embeddings.name})")
        except ValueError as error:
            ok = False
            print(f"embeddings INVALID: {error}")
    if args.verify:
        ok = _verify_checksums(root) and ok
    print(f"data folder: {root.resolve()}")
    return EXIT_OK if ok else EXIT_USAGE


def _problem(error: Exception) -> str:
    return "MISSING" if isinstance(error, FileNotFoundError) else "DAMAGED"


def _verify_checksums(root: Path) -> bool:
    """``data check --verify``: every CIFAR-10 file against the official sums and the MD5SUMS lists."""
    from replab.data.checksums import OFFICIAL_CIFAR10_MD5, verify_folder
    from replab.data.cifar10 import FOLDER

    cifar = next((f for f in (root / "cifar10" / FOLDER, root / FOLDER) if f.is_dir()), root / "cifar10" / FOLDER)
    wikitext = root / "wikitext2"
    sound = True
    for name, folder, files, official in (
        ("cifar10", cifar, list(OFFICIAL_CIFAR10_MD5), OFFICIAL_CIFAR10_MD5),
        ("wikitext2", wikitext, [f"wiki.{s}.npz" for s in ("train", "validation", "test")], None),
    ):
        lines, good = verify_folder(folder, files, official)
        sound = sound and good
        for line in lines:
            print(f"verify {name:<9} {line}")
    return sound


COMMANDS = {"configs": cmd_configs, "train": cmd_train, "grid": cmd_grid, "data": cmd_data}
# Commands defined by other modules register a ``handler`` with ``parser.set_defaults(handler=...)``.


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
            handler = getattr(args, "handler", None) or COMMANDS[args.command]
            return handler(args)
        except UsageError as error:
            print(error_line(str(error)), file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(tagged("replab: interrupted"), file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
