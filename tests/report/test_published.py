"""The published results: ``results/report`` is what ``replab report results/runs`` makes of ``results/runs`` now,
the report is byte-stable for the same runs, and nothing published carries a machine's absolute path."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from replab.cli import main
from tests.report.fakes import write_study

REPO = Path(__file__).resolve().parents[2]
RUNS, REPORT = Path("results/runs"), Path("results/report")  # relative to the repository, as the README gives them
REGENERATE = "replab report results/runs --out results/report"


def _markdown(folder: Path) -> dict[str, str]:
    """report.md and every Markdown table, by path relative to the report folder."""
    files = [folder / "report.md", *sorted((folder / "tables").glob("*.md"))]
    return {str(f.relative_to(folder)): f.read_text() for f in files if f.exists()}


PUBLISHED = ("config.json", "metrics.jsonl", "summary.json", "train.log")  # what git holds of a run (no checkpoints)


def _published_files() -> list[Path]:
    """The files of ``results/runs`` git tracks (a machine that trained them also has checkpoints and locks)."""
    listed = subprocess.run(["git", "ls-files", "-z", str(RUNS)], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): what is there is what was published
        return [p.relative_to(REPO) for p in sorted((REPO / RUNS).rglob("*")) if p.name in PUBLISHED]
    return [Path(name) for name in listed.stdout.split("\0") if name]


def test_published_report_is_what_the_published_runs_give_now(tmp_path, monkeypatch):
    if not (REPO / REPORT / "report.md").exists():
        pytest.skip(f"{REPORT} is not published in this checkout yet (publish the runs, then `{REGENERATE}`)")
    for name in _published_files():  # only the published files: a local best.pt would add an LSTM sample
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(RUNS), "--out", "regenerated"]) == 0
    assert _markdown(Path("regenerated")) == _markdown(REPO / REPORT), f"{REPORT} is out of date: run `{REGENERATE}`"


def test_published_runs_carry_no_absolute_path():
    if not (REPO / RUNS).is_dir():
        pytest.skip(f"{RUNS} is not published in this checkout yet")
    for config in sorted((REPO / RUNS).glob("*/config.json")):
        settings = json.loads(config.read_text())["settings"]
        for key in ("data_dir", "out", "embeddings"):
            assert not (settings.get(key) and Path(settings[key]).is_absolute()), f"{config}: {key} {settings[key]}"
    for name in _published_files():
        assert name.name in PUBLISHED, f"{name}: not a published kind of file (a checkpoint?)"
        assert str(REPO) not in (REPO / name).read_text(), f"{name} holds this checkout's absolute path"


def test_the_report_is_byte_stable_and_names_no_absolute_path(tmp_path, monkeypatch):
    write_study(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    for out in ("first", "second"):
        assert main(["report", "runs", "--out", out]) == 0
    first, second = Path("first"), Path("second")
    assert _markdown(first) == _markdown(second)
    for name in ("report.html", "tables/vit-results.tex", "figures/vit-overlay.pdf", "figures/vit-overlay.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    markdown = (first / "report.md").read_text()
    assert "under runs (`replab report runs` regenerates it)" in markdown
    assert str(tmp_path) not in markdown + (first / "report.html").read_text()
