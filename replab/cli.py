"""The ``replab`` command (also ``python -m replab``).

    replab configs [--json]                 the registry of experiments, every hyperparameter resolved
    replab train ID [overrides]             one experiment into runs/ID/
    replab grid {lstm,vit,cnn,all} [...]    experiments one after another, skipping completed ones, resuming others
    replab train/grid ... --dry-run         time a few real steps: estimated time per epoch, in total, peak memory
    replab data {check,download}            what data is where; download what can be (also GPT-1's files)
    replab generate RUN_DIR [...]           text sampled from a trained LSTM

Exit codes: 0 success, 1 a run diverged or failed, 2 bad input (nothing created), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    hp = parser.add_argument_group("hyperparameter overrides (default: the registry's value)")
    hp.add_argument("--epochs", type=_positive_int)
    hp.add_argument("--batch-size", type=_positive_int, help="global batch size (split across DDP ranks)")
    hp.add_argument("--lr", type=float)
    hp.add_argument("--optimizer", choices=OPTIMIZERS)
    hp.add_argument("--weight-decay", type=_non_negative_float)
    hp.add_argument("--momentum", type=_non_negative_float)
    hp.add_argument("--layers", type=_positive_int, dest="num_layers")
    hp.add_argument("--block", choices=BLOCKS)
    hp.add_argument("--seed", type=int)
    run = parser.add_argument_group("how the run executes")
    run.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    run.add_argument("--amp", choices=AMP_MODES, default="none", help="autocast precision (bf16 also on CPU)")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--attention", choices=("primitive", "sdpa"), default="primitive",
                     help="ViT attention: from primitives (default) or F.scaled_dot_product_attention")
    run.add_argument("--data-dir", help="data folder (default: $REPLAB_DATA, else ./data)")
    run.add_argument("--embeddings", help="LSTM: GPT-1 token embeddings .npz (frozen, tied); default: "
                     "<data dir>/embeddings.npz when present, else learned; 'none': learned")
    run.add_argument("--out", default="runs", help="runs folder (default: runs)")
    run.add_argument("--limit-train-batches", type=_positive_int, help="train on at most N batches per epoch")
    run.add_argument("--limit-eval-batches", type=_positive_int, help="evaluate on at most N batches")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from its last checkpoint (end of an epoch, or inside one)")
    run.add_argument("--checkpoint-minutes", type=_non_negative_float, default=10.0, metavar="M",
                     help="also save a checkpoint inside an epoch about every M minutes of training, so --resume "
                     "loses at most that much; 0: only at the end of each epoch (default: 10)")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run and train it again")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="tqdm progress bars (default: on when stderr is a terminal)")
    run.add_argument("--dry-run", action="store_true",
                     help="time a few real training steps and print the estimated time and memory; write nothing")


HYPERPARAMETERS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "num_layers", "block", "seed")
SETTINGS = ("device", "amp", "compile", "attention", "data_dir", "embeddings", "out", "limit_train_batches",
            "limit_eval_batches", "resume", "overwrite", "progress", "checkpoint_minutes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replab", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    configs = commands.add_parser("configs", help="list the experiments with every resolved hyperparameter")
    configs.add_argument("--json", action="store_true", help="machine-readable output")

    train = commands.add_parser("train", help="train one experiment")
    train.add_argument("id", help="experiment id, e.g. vit-2 or lstm-1 (see `replab configs`)")
    _add_run_options(train)

    grid = commands.add_parser("grid", help="train a grid of experiments, skipping completed ones")
    grid.add_argument("grid", choices=sorted(GRIDS))
    _add_run_options(grid)

    data = commands.add_parser("data", help="check or download the datasets")
    data.add_argument("action", choices=("check", "download"))
    data.add_argument("--data-dir", help="data folder (default: $REPLAB_DATA, else ./data)")
    data.add_argument("--verify", action="store_true",
                      help="check: compare every file's MD5 with the official CIFAR-10 sums and the MD5SUMS lists")
    what = data.add_mutually_exclusive_group()
    what.add_argument("--embeddings", action="store_true",
                      help="download: GPT-1's token embeddings (embeddings.npz) and vocabulary instead of CIFAR-10")
    what.add_argument("--vocabulary", action="store_true",
                      help="download: only GPT-1's BPE vocabulary (gpt1-bpe/, for decoding token ids to text)")
    data.add_argument("--gpt1-url", "--embeddings-url", dest="gpt1_url",
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except UsageError as error:
        print(f"replab: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("replab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
