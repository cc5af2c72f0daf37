"""A report of demo runs (batch limits, fewer epochs: ``replab reproduce --quick``) says so at the top, in its title,
on every figure and in every finding that names one; a report of runs at their settings, unfinished or not, does not
(the published one among them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from replab.report import figures
from replab.report.demo import banner, caption_note, demo_mark, figure_mark, is_demo
from replab.report.document import write_report
from replab.report.study import load_study
from tests.report.fakes import rising, write_run

REPO = Path(__file__).resolve().parents[2]


def quick_runs(root: Path) -> Path:
    """What ``replab reproduce --quick`` leaves, planted: every run 2 epochs of a few batches, the profile recorded
    beside runs/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "reproduce.json").write_text(json.dumps({"profile": {"name": "quick"}}))
    for number in range(1, 7):  # perplexities of a model after 4 batches; lstm-6 "best"
        write_run(root / "runs", f"lstm-{number}", [40000.0, 11659.0 + 900 * (6 - number)], [42000.0, 30000.0],
                  epochs=2, limit_train_batches=2, limit_eval_batches=1)
    for number in range(1, 8):
        write_run(root / "runs", f"vit-{number}", [0.12, 0.15 + 0.01 * number], [0.11, 0.14], epochs=2,
                  limit_train_batches=10, limit_eval_batches=3, test=0.15)
    return root / "runs"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick-style report, with the text and artists of every figure as it was saved."""
    root = tmp_path_factory.mktemp("quick")
    runs = quick_runs(root)
    seen: dict[str, list[str]] = {}
    save = figures._save

    def recording_save(fig, folder, stem, caption):
        seen[stem] = [fig.get_suptitle()] + [t.get_text() for ax in fig.axes for t in ax.texts]
        return save(fig, folder, stem, caption)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_save", recording_save)
        report = write_report([runs], root / "report")
    return report, seen


def test_a_quick_report_opens_with_the_banner_and_says_demo_in_its_title(quick):
    report, _ = quick
    markdown = (report.out / "report.md").read_text()
    title, opening = markdown.split("\n\n")[:2]
    assert title == "# Reproduction report (DEMO: its numbers answer nothing)"
    opening = opening.replace("\n> ", " ")
    assert opening.startswith("> **DEMO: not the study's results.** In this report (made by `replab reproduce "
                              "--quick`), every run (13) trained at demo settings")
    assert "lstm-1, lstm-2, lstm-3, lstm-4, lstm-5, lstm-6: 2 epochs × 2 batches" in opening
    assert "vit-1, vit-2, vit-3, vit-4, vit-5, vit-6, vit-7: 2 epochs × 10 batches" in opening
    assert "answer none of the specification's questions" in opening
    page = (report.out / "report.html").read_text()
    assert "<title>Reproduction report (DEMO: its numbers answer nothing)</title>" in page
    assert re.search(r'<h1>[^<]*DEMO[^<]*</h1>\n<div class="banner"><p><strong>DEMO: not the study', page)


def test_every_figure_of_a_quick_report_is_marked_on_the_figure_and_in_its_caption(quick):
    report, seen = quick
    assert len(report.figures) == 13 + 4  # every run's curves, two overlays, two memory charts
    for figure in report.figures:
        texts = seen[figure.stem]
        expected = "quick demo: 2 epochs × 10 batches" if figure.stem.startswith("vit") else \
            "quick demo: 2 epochs × 2 batches"
        assert texts[0] == expected, figure.stem  # the suptitle, above the panels
        panels = 3 if figure.stem.endswith(("-curves", "-overlay")) else 1
        assert texts.count("DEMO") >= panels - 1, figure.stem  # across each panel
        assert "DEMO, numbers that answer nothing:" in figure.caption, figure.stem


def test_findings_comparing_demo_runs_say_demo_in_the_sentence(quick):
    report, _ = quick
    answered = [f for f in report.findings if f.question is not None and re.search(r"\b(lstm|vit)-\d", f.text)]
    assert len(answered) > 10
    for finding in answered:
        assert finding.text.startswith("Demo (2 epochs × "), finding.text
        assert "beyond the sampling noise" not in finding.text
        assert not re.search(r"(lstm|vit)-\d better", finding.text), finding.text
    generalization = next(f.text for f in report.findings if f.text.startswith("Demo (2 epochs × 2 batches), not a "
                                                                               "result: For generalization"))
    assert "lstm-6 ahead in demo runs, which says nothing about the configurations" in generalization
    summary = (report.out / "report.md").read_text().split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    items = [item for item in summary.strip().split("\n- ")]
    assert items and all("Demo (" in item for item in items)


def test_runs_at_their_settings_make_no_demo_even_unfinished_or_not_the_full_setting(tmp_path):
    """An unfinished run at the specification's settings, the CNN baselines' 10 of the reference training's 180
    epochs and an LSTM that learned its embeddings are flagged as not full, and are no demo."""
    runs = tmp_path / "runs"
    write_run(runs, "vit-2", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], status=None, epochs=10)
    write_run(runs, "vit-1", rising(0.3, 0.6, 10), rising(0.3, 0.7, 10))
    write_run(runs, "cnn-resnet", rising(0.5, 0.8, 10), rising(0.5, 0.9, 10), test=0.79)
    lstm = write_run(runs, "lstm-1", [400.0, 270.0, 225.0], [700.0, 270.0, 165.0], status=None, epochs=10)
    config = lstm.read_config()
    config["task"]["embeddings"] = "learned, initialised N(0, 0.02) (no embeddings file given)"
    lstm.write_config(config)
    study = load_study([runs])
    assert not any(is_demo(r) for r in study.runs) and banner(study) is None
    assert not study.get("cnn-resnet").full_spec and not study.get("lstm-1").full_spec
    report = write_report([runs], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown.startswith("# Reproduction report\n\nGenerated by")
    assert "DEMO" not in markdown and "Demo (" not in markdown and "demo runs" not in markdown
    assert not any("DEMO" in f.caption for f in report.figures)


def test_fewer_epochs_without_batch_limits_make_a_demo_that_only_its_comparisons_share(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "vit-1", rising(0.3, 0.6, 10), rising(0.3, 0.7, 10), test=0.59)
    write_run(runs, "vit-2", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], test=0.49)  # completed, 3 epochs set
    study = load_study([runs])
    assert is_demo(study.get("vit-2")) and not is_demo(study.get("vit-1"))
    assert demo_mark(study.get("vit-2")) == "demo: 3 of 10 epochs"  # no reproduce.json: not "quick"
    assert banner(study).startswith("**DEMO: not the study's results.** In this report, 1 of the 2 runs trained")
    report = write_report([runs], tmp_path / "report")
    captions = {f.stem: f.caption for f in report.figures}
    assert "DEMO" in captions["vit-2-curves"] and "DEMO" in captions["vit-overlay"]
    assert "DEMO" not in captions["vit-1-curves"]
    optimizers = [f.text for f in report.findings if "only the optimizer changes" in f.topic]
    assert optimizers[0].startswith("Demo (3 of 10 epochs), not a result: Best validation accuracy: Adam (vit-1)")
    assert "vit-1 ahead in demo runs, which says nothing about the configurations" in optimizers[1]  # weight decay
    assert all("demo" in text.lower() for text in optimizers)


def test_the_published_runs_are_no_demo():
    runs = REPO / "results" / "runs"
    if not runs.is_dir():
        pytest.skip("results/runs is not published in this checkout")
    study = load_study([runs])
    assert study.runs and not [r.key for r in study.runs if is_demo(r)] and banner(study) is None
    report = REPO / "results" / "report" / "report.md"
    if report.exists():
        markdown = report.read_text()
        assert markdown.startswith("# Reproduction report\n") and "DEMO" not in markdown


def test_a_figure_of_demo_runs_at_several_settings_leaves_them_to_its_caption(tmp_path):
    write_run(tmp_path, "vit-1", [0.3, 0.4], [0.3, 0.4], limit_train_batches=10)
    write_run(tmp_path, "vit-2", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    write_run(tmp_path, "vit-3", rising(0.1, 0.2, 10), rising(0.1, 0.2, 10))
    runs = load_study([tmp_path]).grid("vit")
    assert figure_mark(runs) == "demo runs at several settings (see caption)"
    assert caption_note(runs) == ("; DEMO, numbers that answer nothing: vit-1 2 epochs × 10 batches; vit-2 3 of 10 "
                                  "epochs")
    assert figure_mark(runs[2:]) is None and caption_note(runs[2:]) == ""
