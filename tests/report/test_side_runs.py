"""A side run: a second folder of an experiment the grid holds (the published float32 ``lstm-1`` kept as
``lstm-1-fp32`` beside the grid's bf16 ``lstm-1``). It is listed, compared with the grid's run where their precision
differs (a figure and a finding), and left out of the grid's tables, overlays and findings; ``scripts/publish --as``
publishes it under its own folder name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replab.report.document import write_report
from replab.report.precision import precision_pairs
from replab.report.study import load_study
from tests.report.fakes import rising, write_run, write_sample

REPO = Path(__file__).resolve().parents[2]
FP32 = [402.90, 273.42, 225.61]  # the published float32 lstm-1's validation perplexities, epochs 1-3
AVX512 = {"device_name": "AMD EPYC, AVX512"}


def plant(root: Path, bf16_first: list[float], side_amp: str = "none", side_environment: dict | None = None) -> Path:
    """The six-run bf16 LSTM grid, lstm-1's first epochs ``bf16_first``, and the float32 lstm-1 beside it (3 of its
    10 epochs, as published)."""
    runs = root / "runs"
    for number in range(1, 7):
        val = rising(400.0, 150.0 + 5 * number, 10)
        if number == 1:
            val[:len(bf16_first)] = bf16_first
        write_run(runs, f"lstm-{number}", val, [v * 0.8 for v in val], seconds=2600.0 + 10 * number, amp="bf16",
                  environment=AVX512, test=val[-1] * 1.05)
    side = write_run(runs, "lstm-1", FP32, [723.37, 270.49, 165.33], seconds=[3367.0, 3540.0, 4354.0], status=None,
                     epochs=10, folder="lstm-1-fp32", amp=side_amp, environment=side_environment or AVX512)
    write_sample(side, "the fp32 run's words", 3)
    return runs


@pytest.fixture(scope="module")
def within(tmp_path_factory):
    root = tmp_path_factory.mktemp("within")
    report = write_report([plant(root, [405.10, 276.00, 224.00])], root / "report")
    return report, (root / "report" / "report.md").read_text()


def test_the_side_run_is_kept_beside_the_grid_not_in_it(within):
    report, markdown = within
    study = report.study
    assert [r.key for r in study.grid("lstm")] == [f"lstm-{n}" for n in range(1, 7)]
    assert [r.key for r in study.side_runs("lstm")] == ["lstm-1-fp32"]
    assert study.get("lstm-1").settings["amp"] == "bf16" and study.missing("lstm") == []
    runs_rows = [row[0] for row in next(t for t in report.tables if t.key == "runs").rows]
    assert "lstm-1-fp32" in runs_rows and "lstm-1" in runs_rows
    for key in ("lstm-results", "memory", "overfitting"):
        table = next(t for t in report.tables if t.key == key)
        assert "lstm-1-fp32" not in table.markdown(), key
    assert [row[0] for row in next(t for t in report.tables if t.key == "lstm-results").rows] == \
        ["1", "2", "3", "4", "5", "6"]
    others = [f for f in report.findings if "two precisions" not in f.topic]
    assert not [f.text for f in others if "lstm-1-fp32" in f.text or "3/10" in f.text]
    assert "lstm-1-fp32" not in next(f for f in report.figures if f.stem == "lstm-overlay").caption
    side = markdown.split("## Runs and provenance", 1)[1].split("\n### ", 1)[0].replace("\n  ", " ")
    assert ("- lstm-1-fp32: lstm-1, float32, incomplete (3/10 epochs); compared with the grid's lstm-1 (bf16) under "
            "Problem 1 Q3.") in side
    assert "- lstm-1-fp32 (best.pt, epoch 3), sample:" not in markdown  # the samples are the grid's


def test_two_precisions_of_one_configuration_get_a_figure_and_a_finding(within):
    report, markdown = within
    figure = next(f for f in report.figures if f.stem == "lstm-1-fp32-precision")
    assert figure.png.is_file() and figure.pdf.is_file()
    assert figure.caption.startswith("lstm-1 in bf16 (lstm-1, completed) and in float32 (lstm-1-fp32, incomplete "
                                     "(3/10 epochs)): validation perplexity over the 3 epochs both have")
    (finding,) = [f for f in report.findings if f.topic == "LSTM on Wikitext-2: one configuration in two precisions"]
    assert finding.question == (1, 3)
    assert finding.text.startswith(
        "lstm-1 in bf16 (lstm-1) against float32 (lstm-1-fp32), validation perplexity per epoch: epoch 1 405.10 vs "
        "402.90 (+0.55%); epoch 2 276.00 vs 273.42 (+0.94%); epoch 3 224.00 vs 225.61 (-0.71%); all 3 epochs they "
        "share are within 3% (largest 0.94%): bf16 trains like float32 here.")
    assert "Median training time per epoch on cpu (AMD EPYC, AVX512): 2,610 s vs 3,540 s (bf16 1.36× as fast)." in \
        finding.text
    q3 = markdown.split("### Problem 1 Q3", 1)[1].split("### Problem 1 Q4", 1)[0]
    assert q3.index("![Figure") < q3.index("](figures/lstm-1-fp32-precision.png)") < q3.index("two precisions")


def test_an_epoch_beyond_three_percent_is_named(tmp_path):
    report = write_report([plant(tmp_path, [405.10, 290.00, 224.00])], tmp_path / "report")
    (finding,) = [f.text for f in report.findings if "two precisions" in f.topic]
    assert "epoch 2 290.00 vs 273.42 (+6.06%)" in finding
    assert "not every one of the 3 epochs they share is within 3%: epoch 2 differs by more" in finding


def test_side_runs_of_the_same_precision_or_device_are_not_compared_as_such(tmp_path):
    same = write_report([plant(tmp_path / "same", [405.1], side_amp="bf16")], tmp_path / "same" / "report")
    assert not [f for f in same.findings if "two precisions" in f.topic]
    assert "lstm-1-fp32-precision" not in [f.stem for f in same.figures]
    elsewhere = plant(tmp_path / "elsewhere", [405.1], side_environment={"device_name": "AMD EPYC"})
    (text,) = [f.text for f in write_report([elsewhere], tmp_path / "elsewhere" / "report").findings
               if "two precisions" in f.topic]
    assert ("Times not compared: lstm-1 trained on cpu (AMD EPYC, AVX512), lstm-1-fp32 on cpu (AMD EPYC).") in text


def test_a_second_folder_of_an_id_named_like_it_gets_a_numbered_key(tmp_path):
    for root in ("a", "b"):
        write_run(tmp_path / root, "vit-2", [0.3, 0.4], [0.3, 0.4])
    study = load_study([tmp_path / "a", tmp_path / "b"])
    assert [(r.key, r.side) for r in study.runs] == [("vit-2", False), ("vit-2-2", True)]
    assert study.get("vit-2").record.path == tmp_path / "a" / "vit-2" and precision_pairs(study, "vit") == []


def test_publish_as_copies_one_run_under_another_folder_name(tmp_path):
    """scripts/publish SRC ID --as NAME, run in a copy of the repository's layout: the run's records (not its
    checkpoints) in results/runs/NAME, the report regenerated with it as a side run."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "publish", tmp_path / "scripts" / "publish")
    plant(tmp_path / "trained", [405.10, 276.00, 224.00])
    results = tmp_path / "results" / "runs"
    shutil.copytree(tmp_path / "trained" / "runs" / "lstm-1-fp32", results / "lstm-1")  # the fp32 run, published
    (results / "lstm-1" / "best.pt").write_bytes(b"checkpoint")  # never published
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": sys.prefix}
    publish = [str(tmp_path / "scripts" / "publish")]

    def run(*args):
        return subprocess.run(publish + list(args), cwd=tmp_path, env=env, capture_output=True, text=True)

    refused = run("results/runs", "lstm-1", "lstm-2", "--as", "x")
    assert refused.returncode == 2 and "--as names the folder of one run, got 2 ids" in refused.stderr
    assert run("results/runs", "lstm-1", "--as", "a/b").returncode == 2
    done = run("results/runs", "lstm-1", "--as", "lstm-1-fp32")
    assert done.returncode == 0, done.stderr
    assert "published lstm-1 as lstm-1-fp32: config.json metrics.jsonl sample.json" in done.stdout
    assert sorted(p.name for p in (results / "lstm-1-fp32").iterdir()) == ["config.json", "metrics.jsonl",
                                                                           "sample.json"]
    grid = run(str(tmp_path / "trained" / "runs"), "lstm-1")  # the bf16 grid run takes lstm-1's place
    assert grid.returncode == 0, grid.stderr
    assert not (results / "lstm-1" / "sample.json").exists()  # the fp32 run's sample does not stay
    assert (results / "lstm-1" / "summary.json").exists()
    markdown = (tmp_path / "results" / "report" / "report.md").read_text().replace("\n", " ")
    assert "- lstm-1-fp32: lstm-1, float32, incomplete (3/10 epochs)" in markdown
