"""``replab reproduce``: profiles, the guard against mixing quick and full runs, and one real quick run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from replab import reproduce, runlog
from replab.cli import build_parser, main
from replab.reproduce import QUICK, check_profile, plan_grids

# Two ViT configurations, 1 epoch of 1 batch of 16 images: the whole pipeline in seconds (an LSTM step alone takes
# 10-50 s on a loaded 2-core CPU, so the LSTM grid is left to the report tests' planted runs).
TINY = {"epochs": 1, "batch_size": 16, "limit_train_batches": 1, "limit_eval_batches": 1,
        "experiments": ["vit-1", "vit-7"]}


@pytest.fixture
def tiny_quick_profile(monkeypatch) -> reproduce.Profile:
    """The quick profile shrunk to ``TINY`` (every grid's fields, and only its experiments) for this test."""
    overrides = {k: v for k, v in TINY.items() if k != "experiments"}
    grids = {name: dataclasses.replace(grid, **overrides) for name, grid in QUICK.grids.items()}
    profile = reproduce.Profile("quick", grids, tuple(TINY["experiments"]))
    monkeypatch.setattr(reproduce, "QUICK", profile)
    return profile


def test_quick_profile_is_small_and_overridable(tiny_quick_profile):
    assert {grid: p.epochs for grid, p in QUICK.grids.items()} == {"lstm": 2, "vit": 2, "cnn": 2}
    assert QUICK.grids["lstm"].limit_train_batches == 2 and QUICK.grids["vit"].limit_train_batches == 10
    profile = reproduce.QUICK
    assert profile.experiments == ("vit-1", "vit-7")
    assert all(g.epochs == 1 and g.limit_train_batches == 1 for g in profile.grids.values())


def test_quick_and_full_runs_never_mix(tmp_path, capsys):
    check_profile(tmp_path, QUICK)
    check_profile(tmp_path, QUICK)  # the same profile again: fine
    assert main(["reproduce", "--out", str(tmp_path)]) == 2  # refused before anything is trained
    assert "never mix" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag, progress", [([], None), (["--progress"], True), (["--no-progress"], False)])
def test_reproduce_passes_the_progress_choice_to_every_run(tmp_path, flag, progress):
    args = build_parser().parse_args(["reproduce", "--quick", "--with-cnn", *flag])
    plan = plan_grids(args, QUICK, tmp_path / "runs")
    assert [grid for grid, *_ in plan] == ["lstm", "vit", "cnn"]
    assert all(run_settings.progress is progress for _, _, run_settings, _ in plan)
    assert not any(run_settings.keep_checkpoints for _, _, run_settings, _ in plan)
    kept = plan_grids(build_parser().parse_args(["reproduce", "--keep-checkpoints"]), QUICK, tmp_path / "runs")
    assert all(run_settings.keep_checkpoints for _, _, run_settings, _ in kept)


@pytest.mark.slow
def test_reproduce_quick_end_to_end(data_root, tmp_path, tiny_quick_profile):
    """The quick reproduction, shrunk by the ``tiny_quick_profile`` fixture, on the real data."""
    argv = ["reproduce", "--quick", "--out", str(tmp_path), "--data-dir", str(data_root), "--device", "cpu",
            "--no-progress"]
    assert main(argv) == 0
    runs, report = tmp_path / "runs", tmp_path / "report"
    assert sorted(p.name for p in runs.iterdir()) == ["vit-1", "vit-7"]
    assert json.loads((runs / "vit-7" / "summary.json").read_text())["status"] == "completed"
    markdown = (report / "report.md").read_text()
    assert markdown.startswith("# Reproduction report (DEMO: its numbers answer nothing)\n\n> **DEMO: not the study's")
    assert "(made by `replab reproduce --quick`)" in markdown.replace("\n> ", " ")
    assert "NO: train ≤ 1 batches/epoch; eval ≤ 1 batches; batch_size 16 (spec 128); epochs 1 (spec 10)" in markdown
    assert "vit-2, vit-3, vit-4, vit-5, vit-6" in markdown  # the rest of the grid, listed as missing
    assert "PreNorm (vit-6) against PostNorm" not in markdown
    for name in ("vit-1-curves.png", "vit-7-curves.pdf", "vit-overlay.png", "vit-memory.png"):
        assert (report / "figures" / name).exists()
    assert (report / "report.html").stat().st_size > 10_000


def _disk_use(folder) -> int:
    """Bytes in the files under ``folder`` (what ``du`` counts, near enough)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_quick_reproduction_keeps_one_checkpoint_of_weights_per_run(data_root, tmp_path, monkeypatch):
    """The disk budget of ``reproduce --quick``, on a quick profile with small limits (an LSTM and a ViT for 2 epochs
    of 1 batch): each completed run keeps its best weights once and its logs; nothing else of size. The whole
    folder stays within the weights plus 2 MB a run (logs, the LSTM's sample) and the report; the training state
    it held while training (about three times the weights, twice over for an LSTM) is gone."""
    small = reproduce.GridProfile(epochs=2, batch_size=2, limit_train_batches=1, limit_eval_batches=1)
    monkeypatch.setattr(reproduce, "QUICK", reproduce.Profile("quick", {g: small for g in QUICK.grids},
                                                            ("lstm-1", "vit-1")))
    peak = []
    save = runlog.atomic_torch_save

    def measured_save(path, obj, keep_previous=None):
        save(path, obj, keep_previous)
        peak.append(_disk_use(tmp_path / "runs"))

    monkeypatch.setattr(runlog, "atomic_torch_save", measured_save)
    argv = ["reproduce", "--quick", "--out", str(tmp_path), "--data-dir", str(data_root), "--device", "cpu",
            "--no-progress"]
    assert main(argv) == 0
    runs = tmp_path / "runs"
    weights = 0
    for run_id in ("lstm-1", "vit-1"):
        folder = runs / run_id
        assert sorted(p.name for p in folder.glob("*.pt")) == ["best.pt"], run_id
        best = torch.load(folder / "best.pt", weights_only=True)
        assert "optimizer" not in best and best["epoch"] == json.loads((folder / "summary.json").read_text())[
            "best_epoch"]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in best["model"].values()}
        weights += sum(storages.values())  # each once: the LSTM's output layer shares its embedding's weights
    assert (runs / "lstm-1" / "sample.json").exists()
    assert _disk_use(runs) <= weights + 2 * 2**20 * 2
    assert _disk_use(tmp_path) <= _disk_use(runs) + _disk_use(tmp_path / "report") + 2**16
    assert max(peak) > 3 * weights  # while training, the runs held their training state too
