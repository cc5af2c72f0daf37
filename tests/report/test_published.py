"""The published results: ``results/report`` is what ``replab report results/runs --link-figures`` makes of
``results/runs`` and ``results/discussion.md`` now, it answers every question of the specification in order with
its discussion, the report is byte-stable for the same runs, nothing published carries a machine's absolute path,
and the README's Results tables quote the published runs' numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from replab.cli import main
from replab.report.blocks import WIDTH
from replab.report.formatting import fmt_count
from replab.report.reference import CNN_REFERENCE, QUESTIONS, question_name
from replab.report.runs import RunView
from replab.report.study import load_study
from tests.report.fakes import write_study

REPO = Path(__file__).resolve().parents[2]
RUNS, REPORT = Path("results/runs"), Path("results/report")  # relative to the repository, as the README gives them
DISCUSSION = Path("results/discussion.md")  # found beside results/runs
REGENERATE = "replab report results/runs --out results/report --link-figures"  # figures stored once in git


def _markdown(folder: Path) -> dict[str, str]:
    """report.md and every Markdown table, by path relative to the report folder."""
    files = [folder / "report.md", *sorted((folder / "tables").glob("*.md"))]
    return {str(f.relative_to(folder)): f.read_text() for f in files if f.exists()}


# What git holds of a run (no checkpoints): its records, and an LSTM's text sample
PUBLISHED = ("config.json", "metrics.jsonl", "summary.json", "train.log", "sample.json")


def _published_files() -> list[Path]:
    """The files of ``results/runs`` git tracks (a machine that trained them also has checkpoints and locks)."""
    listed = subprocess.run(["git", "ls-files", "-z", str(RUNS)], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): what is there is what was published
        return [p.relative_to(REPO) for p in sorted((REPO / RUNS).rglob("*")) if p.name in PUBLISHED]
    return [Path(name) for name in listed.stdout.split("\0") if name]


def test_published_report_is_what_the_published_runs_give_now(tmp_path, monkeypatch):
    if not (REPO / REPORT / "report.md").exists():
        pytest.skip(f"{REPORT} is not published in this checkout yet (publish the runs, then `{REGENERATE}`)")
    for name in [*_published_files(), DISCUSSION]:  # only the published files: a local best.pt would add a sample
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(RUNS), "--out", "regenerated", "--link-figures"]) == 0
    assert _markdown(Path("regenerated")) == _markdown(REPO / REPORT), f"{REPORT} is out of date: run `{REGENERATE}`"
    published_html = (REPO / REPORT / "report.html").read_text()
    assert Path("regenerated/report.html").read_text() == published_html, f"run `{REGENERATE}`"


def test_published_report_answers_every_question_in_order_with_its_discussion():
    """One section per question the specification asks the report to answer (Problem 1 Q3-Q4, Problem 2 Q5,
    Problem 3 Q1-Q8), in its order, each ending with the written discussion; prose wrapped at 120 columns."""
    report = REPO / REPORT / "report.md"
    if not report.exists():
        pytest.skip(f"{REPORT} is not published in this checkout yet")
    markdown = report.read_text()
    names = [question_name(p, q) for p, q, _ in QUESTIONS]
    assert names == ["Problem 1 Q3", "Problem 1 Q4", "Problem 2 Q5"] + [f"Problem 3 Q{n}" for n in range(1, 9)]
    sections = re.split(r"\n### (?=Problem )", markdown)[1:]
    assert [s.split(":", 1)[0] for s in sections] == names
    for name, section in zip(names, sections, strict=True):
        section = section.split("\n## ", 1)[0]  # up to the next problem, or the appendix
        assert "\n#### Discussion\n" in section, f"{name}: no written discussion"
        assert len(section.split("\n#### Discussion\n", 1)[1].strip()) > 200, f"{name}: an empty discussion"
    assert markdown.index("## Summary") < markdown.index("**Table 1.**")  # the headline opens the report
    prose = [line for line in markdown.splitlines() if not line.startswith("|")]
    assert max(map(len, prose)) <= WIDTH, max(prose, key=len)


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


def _results_rows(readme: str) -> dict[str, dict[str, str]]:
    """The rows of the tables in the README's Results section whose first column is ``Run``: {run id: {header: cell}}
    (the id is the first word of the Run cell, which may go on with ``(unfinished, 7/10 epochs)``)."""
    section = readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows, header = {}, None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif cells[0] == "Run":
            header = cells
        elif header and not set(cells[0]) <= set("-: "):
            rows[cells[0].split()[0]] = dict(zip(header, cells, strict=True))
    return rows


def _score(run: RunView, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f} %" if run.metric == "accuracy" else f"{value:.2f}"


def _quotes(row: dict[str, str], column: str, expected: str, where: str) -> None:
    """The cell of the column whose header starts with ``column`` is ``expected``."""
    (cell,) = [v.replace("**", "") for k, v in row.items() if k.startswith(column)]
    assert cell == expected, f"{where}, {column}: the README says {cell!r}, the published run gives {expected!r}"


def test_readme_results_quote_the_published_runs():
    if not (REPO / RUNS).is_dir():
        pytest.skip(f"{RUNS} is not published in this checkout yet")
    rows = _results_rows((REPO / "README.md").read_text())
    for run in load_study([REPO / RUNS]).runs:
        assert run.id in rows, f"README Results: no row for the published run {run.id}"
        row, where = rows[run.id], f"README Results, {run.id}"
        status = "" if run.completed else f" (unfinished, {run.epochs_completed}/{run.epochs_planned} epochs)"
        _quotes(row, "Run", run.id + status, where)
        _quotes(row, "Best val", f"{_score(run, run.best_val)} ({run.best_epoch})", where)
        _quotes(row, "Test", _score(run, run.test()), where)
        _quotes(row, "Parameters", fmt_count(run.parameters), where)
        _quotes(row, "Fastest s/epoch", f"{run.fastest_epoch_seconds:.0f}", where)
        _quotes(row, "Memory", f"{run.memory['steady_mean_mb']:,.0f}", where)
        reference = CNN_REFERENCE.get(run.experiment.get(run.spec.variant)) if run.task == "cnn" else None
        if reference is not None:  # the specification's test accuracy of the same network
            _quotes(row, "Reference", f"{reference[2]:.2f} %", where)
