"""The sample an LSTM run keeps in ``sample.json``: what ``replab generate`` draws from its best.pt with the fixed
prompt and settings, written without disturbing the training's RNG, and what the report shows without checkpoints."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from replab.cli import main
from replab.report.samples import samples_text
from replab.report.study import load_study
from replab.run_sample import SAMPLE_FILE, SAMPLE_PROMPT, SAMPLE_SETTINGS, keep_sample, read_sample
from replab.runlog import RunDir
from tests.report.fakes import write_run
from tests.test_generate import write_lstm_run

GENERATE_FLAGS = ["--prompt", SAMPLE_PROMPT, "--tokens", str(SAMPLE_SETTINGS.tokens), "--temperature",
                  str(SAMPLE_SETTINGS.temperature), "--top-k", str(SAMPLE_SETTINGS.top_k), "--seed",
                  str(SAMPLE_SETTINGS.seed)]


def generated(run: RunDir, data_root, capsys) -> str:
    """What ``replab generate RUN`` prints with the sample's prompt and settings (the oracle)."""
    capsys.readouterr()
    assert main(["generate", str(run.path), *GENERATE_FLAGS, "--data-dir", str(data_root)]) == 0
    return capsys.readouterr().out.strip()


def test_the_kept_sample_is_what_generate_draws_and_leaves_the_rng_alone(tmp_path, data_root, gpt1_tokenizer, capsys):
    run = write_lstm_run(tmp_path / "lstm-1")  # a small random LSTM, its best.pt of epoch 3
    torch.manual_seed(123)
    before = torch.get_rng_state()
    kept = keep_sample(run.path, data_root, epoch=3)
    assert torch.equal(torch.get_rng_state(), before)  # training goes on with the numbers it would have had
    assert kept == read_sample(run.path) == json.loads((run.path / SAMPLE_FILE).read_text())
    assert kept["epoch"] == 3 and kept["prompt"] == SAMPLE_PROMPT and kept["checkpoint"] == "best.pt"
    assert kept["settings"] == {"tokens": 40, "temperature": 0.8, "top_k": 40, "seed": 0, "greedy": False}
    assert kept["text"] == generated(run, data_root, capsys) == f"{SAMPLE_PROMPT} {kept['continuation']}"
    assert "drawn by the run from its best.pt of epoch 3" in kept["provenance"]

    written = (run.path / SAMPLE_FILE).stat().st_mtime_ns
    assert keep_sample(run.path, data_root, epoch=3) == kept  # that epoch's sample is there: not drawn again
    assert (run.path / SAMPLE_FILE).stat().st_mtime_ns == written


def test_without_the_vocabulary_there_is_no_sample_and_one_warning(tmp_path, caplog):
    run = write_lstm_run(tmp_path / "lstm-1")
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        assert keep_sample(run.path, tmp_path / "no-data", epoch=3) is None
    assert not (run.path / SAMPLE_FILE).exists()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "lstm-1: no text sample" in warning and "replab data download --vocabulary" in warning


def test_the_report_shows_a_published_runs_sample_and_how_it_was_made(tmp_path, data_root, gpt1_tokenizer):
    """A run folder without checkpoints (as published) shows the sample of its sample.json, a recovered one says
    so, and one drawn otherwise than the report's introduction says names its prompt and settings."""
    root = tmp_path / "runs"
    trained = write_lstm_run(tmp_path / "trained" / "lstm-1", hidden=512, layers=1)
    keep_sample(trained.path, data_root, epoch=3)
    write_run(root, "lstm-1", [900.0, 500.0, 300.0], [1000.0, 600.0, 350.0])
    shutil.copy(trained.path / SAMPLE_FILE, root / "lstm-1" / SAMPLE_FILE)  # what scripts/publish copies
    kept = read_sample(root / "lstm-1")
    write_run(root, "lstm-2", [900.0, 500.0], [1000.0, 600.0])
    recovered = {**kept, "continuation": "is a lobster.", "recovered_from": "the README of commit abc1234"}
    (root / "lstm-2" / SAMPLE_FILE).write_text(json.dumps(recovered))
    write_run(root, "lstm-3", [900.0], [1000.0])
    other = {**kept, "continuation": "is a crab.", "settings": {**kept["settings"], "seed": 7}}
    (root / "lstm-3" / SAMPLE_FILE).write_text(json.dumps(other))
    write_run(root, "lstm-5", [900.0], [1000.0])

    runs = [r for r in load_study([root]).grid("lstm") if not r.missing]
    intro, items = samples_text(runs, tmp_path / "no-vocabulary-needed")
    assert "sample.json" in intro and SAMPLE_PROMPT in intro
    assert items[0] == f"lstm-1 (best.pt, epoch 3), sample: \u201c\u2026 {kept['continuation']}\u201d"
    assert items[1] == ("lstm-2 (best.pt, epoch 3; recovered from the README of commit abc1234, not regenerated), "
                        "sample: \u201c\u2026 is a lobster.\u201d")
    assert items[2].startswith(f"lstm-3 (best.pt, epoch 3; prompt \u201c{SAMPLE_PROMPT}\u201d, tokens 40, ")
    assert "seed 7" in items[2] and items[2].endswith("is a crab.\u201d")
    assert items[3] == "lstm-5: no sample (its folder holds no sample.json and no best.pt)."


@pytest.mark.slow
def test_an_lstm_run_keeps_the_sample_of_its_best_checkpoint(tmp_path, data_root, gpt1_tokenizer, monkeypatch,
                                                              capsys):
    monkeypatch.setenv("REPLAB_DATA", str(data_root))
    samples = []
    import replab.tasks

    keep = replab.tasks.keep_sample
    monkeypatch.setattr(replab.tasks, "keep_sample", lambda *a, **k: samples.append(a[2]) or keep(*a, **k))
    args = ["train", "lstm-1", "--epochs", "2", "--batch-size", "2", "--limit-train-batches", "1",
            "--limit-eval-batches", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    run = RunDir(tmp_path / "lstm-1")
    summary, kept = run.read_summary(), read_sample(run.path)
    improved = [r["epoch"] for r in run.read_metrics() if r["val_perplexity"] <= summary["best_val"] or r["epoch"] == 1]
    assert samples == [*improved, summary["best_epoch"]]  # after each improvement, then at the end (nothing new)
    assert kept["epoch"] == summary["best_epoch"] and sorted(p.name for p in run.path.glob("*.pt")) == ["best.pt"]
    assert kept["text"] == generated(run, data_root, capsys)
