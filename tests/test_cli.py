"""The `replab` command: the registry table, and every bad-input path (one line, exit code 2, nothing created)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from replab.cli import build_parser, main
from replab.experiments import EXPERIMENTS, RunSettings, get_experiment, with_overrides

SPEC_TABLE = {  # id: (task, layers, block, optimizer), the table of the specification's runner scripts
    "lstm-1": ("lstm", 1, None, "adam"),
    "lstm-2": ("lstm", 1, None, "adamw"),
    "lstm-3": ("lstm", 1, None, "sgd"),
    "lstm-4": ("lstm", 1, None, "momentum"),
    "lstm-5": ("lstm", 2, None, "adamw"),
    "lstm-6": ("lstm", 4, None, "adamw"),
    "vit-1": ("vit", 2, "prenorm", "adam"),
    "vit-2": ("vit", 2, "prenorm", "adamw"),
    "vit-3": ("vit", 2, "prenorm", "sgd"),
    "vit-4": ("vit", 2, "prenorm", "momentum"),
    "vit-5": ("vit", 4, "prenorm", "adamw"),
    "vit-6": ("vit", 6, "prenorm", "adamw"),
    "vit-7": ("vit", 6, "postnorm", "adamw"),
}


def test_configs_json_is_exactly_the_specification_table(capsys):
    assert main(["configs", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    for experiment_id, (task, layers, block, optimizer) in SPEC_TABLE.items():
        r = rows[experiment_id]
        assert (r["task"], r["num_layers"], r.get("block"), r["optimizer"]) == (task, layers, block, optimizer)
        assert r["seed"] == 42 and r["epochs"] == 10
        assert r["weight_decay"] == (0.0 if optimizer == "adam" else 5e-4)
        assert r["momentum"] == (0.9 if optimizer == "momentum" else 0.0)
        if task == "lstm":
            assert (r["batch_size"], r["lr"], r["hidden_size"]) == (16, 1e-3, 512)
        else:
            assert (r["batch_size"], r["lr"], r["embed_dim"], r["hidden_dim"]) == (128, 3e-4, 256, 512)
            assert (r["num_heads"], r["patch_size"], r["dropout"]) == (8, 4, 0.0)
    assert {k for k in rows if not k.startswith("cnn-")} == set(SPEC_TABLE)


def test_configs_text_lists_every_experiment(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert all(experiment_id in out for experiment_id in EXPERIMENTS)


def test_changing_the_optimizer_reapplies_its_rule():
    vit2 = get_experiment("vit-2")
    assert with_overrides(vit2, optimizer="momentum").momentum == 0.9
    assert with_overrides(vit2, optimizer="adam").weight_decay == 0.0
    assert with_overrides(vit2, optimizer="sgd", weight_decay=0.1).weight_decay == 0.1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "vit-99"], "unknown experiment 'vit-99'"),
        (["train", "vit-2", "--lr", "-1"], "lr must be positive"),
        (["train", "vit-2", "--optimizer", "adam", "--weight-decay", "0.1"], "adam takes no weight decay"),
        (["train", "vit-2", "--momentum", "0.5"], "needs --optimizer momentum"),
        (["train", "vit-2", "--resume", "--overwrite"], "exclude each other"),
        (["train", "vit-2", "--device", "cuda"], "CUDA is not available"),
        (["train", "vit-2", "--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
        (["grid", "vit", "--lr", "0"], "lr must be positive"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, argv, message):
    if "cuda" in argv and __import__("torch").cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "runs"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("replab: error:") and message in err
    assert not out.exists()


def test_missing_data_names_the_path_and_the_fix_once(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "vit-2", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "replab data download" in err and len(err.strip().splitlines()) == 1
    assert err.count("REPLAB_DATA") == 1 and err.count("--data-dir") == 1 and err.count("data download") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "vit-2", "--epochs", "0"], "argument --epochs: must be a positive integer, got 0 (see replab train "
                                          "--help)"),
    (["train", "vit-2", "--batch-size", "x"], "argument --batch-size: must be a positive integer, got 'x'"),
    (["train", "vit-2", "--checkpoint-minutes", "-5"], "argument --checkpoint-minutes: must be >= 0, got -5"),
    (["grid", "every"], "argument GRID: invalid choice: 'every'"),
    (["train", "vit-2", "--epochs", "3", "--bogus"], "unrecognized arguments: --bogus (see replab train --help)"),
    (["train"], "the following arguments are required: ID (see replab train --help)"),
    ([], "the following arguments are required: COMMAND (see replab --help)"),
])
def test_argument_errors_are_one_line_with_a_pointer_to_help(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"replab: error: {message}") and not captured.out
    assert len(captured.err.splitlines()) == 1 and "usage:" not in captured.err


def test_rules_of_the_command_line_hold_for_the_python_api_too():
    with pytest.raises(ValueError, match="--checkpoint-minutes must be 0"):
        RunSettings(checkpoint_minutes=-5.0).validate()


def test_a_bad_epochs_value_is_exactly_one_line_on_stderr_and_exit_2():
    result = subprocess.run([sys.executable, "-m", "replab", "train", "vit-2", "--epochs", "0"], capture_output=True,
                            text=True, env={**os.environ}, timeout=120)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("replab: error: argument --epochs:")


def test_version_prints_the_version_and_exits_0():
    import replab

    result = subprocess.run([sys.executable, "-m", "replab", "--version"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert result.returncode == 0 and result.stdout == f"replab {replab.__version__}\n"


def _actions(parser: argparse.ArgumentParser, name: str = "replab"):
    """Every (command, action) of the parser and of its subcommands."""
    for action in parser._actions:
        yield name, action
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                yield from _actions(subparser, f"{name} {command}")


def test_every_option_and_argument_has_help_without_markup():
    actions = list(_actions(build_parser()))
    assert {name for name, _ in actions} >= {"replab train", "replab grid", "replab reproduce", "replab generate"}
    for name, action in actions:
        where = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help != argparse.SUPPRESS, f"{where}: no help text"
        assert "``" not in action.help, f"{where}: documentation markup in its help"
    assert "``" not in build_parser().description


def test_data_check_reports_real_data(data_root, capsys):
    assert main(["data", "check", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "wikitext2 train" in out and "45000 train / 5000 valid / 10000 test" in out
    assert "vocabulary ok: 40,478 GPT-1 tokens, 40,000 merges (gpt1-bpe/)" in out


def test_data_check_reports_missing_data(tmp_path, capsys):
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 2
    assert "MISSING" in capsys.readouterr().out


def test_python_dash_m_replab_works():
    result = subprocess.run([sys.executable, "-m", "replab", "configs"], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert result.returncode == 0 and "vit-7" in result.stdout


def test_bf16_lstm_is_refused_on_a_cpu_without_bf16_instructions(tmp_path, capsys):
    from replab.system import native_bf16_cpu

    if native_bf16_cpu() is not False:
        pytest.skip("this CPU has bf16 instructions (or they are unknown)")
    out = tmp_path / "runs"
    assert main(["train", "lstm-2", "--amp", "bf16", "--device", "cpu", "--out", str(out)]) == 2
    assert "needs a CPU with bf16 instructions" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,named",
    [
        (["train", "cnn-resnet", "--layers", "7"], "cnn-resnet: the cnn model has no --layers; it takes none of "
                                                   "the model options (--layers, --block): the experiment id fixes "
                                                   "its model"),
        (["train", "lstm-1", "--block", "postnorm"], "lstm-1: the lstm model has no --block; of the model options, it "
                                                     "takes --layers"),
        (["grid", "cnn", "--block", "postnorm"], "cnn-googlenet: the cnn model has no --block;"),
    ],
)
def test_an_option_the_model_does_not_have_is_refused_naming_the_flags(tmp_path, capsys, argv, named):
    out = tmp_path / "runs"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"replab: error: {named}")
    assert "architecture" not in err and "num_layers" not in err  # fields, not flags a user can type
    assert not out.exists()


def test_model_options_reach_the_model_config():
    vit = with_overrides(get_experiment("vit-2"), num_layers=4, block="postnorm", lr=1e-3)
    assert (vit.config.num_layers, vit.config.block, vit.lr) == (4, "postnorm", 1e-3)
    assert with_overrides(get_experiment("lstm-1"), num_layers=3).config.num_layers == 3
