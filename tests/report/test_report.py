"""The report from planted runs (tests/report/fakes.py): tables, figures, captions, findings and the HTML."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from replab.cli import main
from replab.report.figures import grid_overlay
from replab.report.findings import findings
from replab.report.study import load_study
from replab.report.tables import CNN_REFERENCE, cnn_table, memory_table, results_table, runs_table
from tests.report.fakes import rising, write_run, write_study


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("study") / "runs")


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    """The report folder, written once by the ``replab report`` command."""
    out = tmp_path_factory.mktemp("report") / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def linked_report(runs, tmp_path_factory) -> Path:
    """The same report written with ``--link-figures``."""
    out = tmp_path_factory.mktemp("linked") / "report"
    assert main(["report", str(runs), "--out", str(out), "--link-figures"]) == 0
    return out


@pytest.fixture(scope="module")
def study(runs):
    return load_study([runs])


def column(table, name: str) -> list[str]:
    return [row[table.columns.index(name)] for row in table.rows]


def finding_texts(study, topic_part: str) -> str:
    return "\n".join(f.text for f in findings(study) if topic_part in f.topic)


# ------------------------------------------------------------------------------------------------ tables
def test_vit_table_is_sorted_and_shows_every_status(study):
    table = results_table(study, "vit")
    assert column(table, "No.") == ["1", "2", "3", "4", "5", "6", "7"]
    assert column(table, "Architecture") == ["PreNorm"] * 6 + ["PostNorm"]
    status = column(table, "Status")
    assert status[2] == "diverged (3/10 epochs)" and status[4] == "incomplete (2/10 epochs)"
    assert column(table, "Best val. acc. (%) (epoch)")[5] == "70.00 (5)"
    assert column(table, "s/epoch (fastest)")[3] == "8.0 (8.0)"


def test_missing_grid_member_is_a_row_in_its_place(study):
    table = results_table(study, "lstm")
    assert column(table, "No.") == ["1", "2", "3", "4", "5", "6"]
    assert column(table, "Optimizer")[3] == "SGD+momentum" and column(table, "Status")[3] == "missing (not run)"
    assert study.missing("lstm") == ["lstm-4"] and study.missing("vit") == []


def test_exactly_the_best_of_each_architecture_is_bold(study):
    vit = results_table(study, "vit")
    best_column = vit.columns.index("Best val. acc. (%) (epoch)")
    assert vit.bold == {(5, best_column), (6, best_column)}  # vit-6 (PreNorm) and vit-7 (PostNorm)
    assert vit.markdown().count("**") == 4 and vit.latex().count(r"\textbf{") == 2
    lstm = results_table(study, "lstm")
    assert lstm.bold == {(4, lstm.columns.index("Best val. PPL (epoch)"))}  # lstm-5, the only bold cell
    assert "best validation perplexity overall" in lstm.caption


def test_latex_is_booktabs_and_escaped(study):
    latex = results_table(study, "vit").latex()
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:vit-results}"):
        assert command in latex
    assert r"acc. (\%)" in latex and "acc. (%)" not in latex


def test_cnn_table_puts_our_runs_beside_the_reference_numbers(tmp_path, study):
    table = cnn_table(study)
    rows = table.rows
    assert table.columns[2:4] == ["Ref. test acc. (%)", "Our test acc. (%)"]  # the comparable numbers, side by side
    for label, val, test, params in CNN_REFERENCE.values():
        assert [label, f"{params:,}", f"{test:.2f}", "—", f"{val:.2f}", "—", "not run"] in rows
    assert rows[-1][5] == "72.00" and rows[-1][-1].startswith("best ViT, vit-7: completed")
    write_run(tmp_path, "cnn-resnet", [0.8, 0.9], [0.85, 0.95], test=0.89)
    write_run(tmp_path, "cnn-densenet", [], [], epochs=10, status=None)  # started, first epoch not done yet
    own = cnn_table(load_study([tmp_path])).rows
    assert ["ResNet", "272,378", "91.06", "89.00", "91.84", "90.00", "cnn-resnet: completed, 2 epochs"] in own
    assert ["DenseNet", "239,146", "90.23", "—", "90.72", "—", "cnn-densenet: incomplete (0/10 epochs)"] in own
    assert ["GoogleNet", "260,650", "89.70", "—", "90.40", "—", "not run"] in own


def test_cnn_comparison_says_it_compares_test_accuracy_and_where_the_reference_comes_from(study):
    caption = cnn_table(study).caption
    assert "compared on test accuracy, the same 10,000 test images on both sides" in caption
    assert "180 epochs of the reference training" in caption and "reference training's own 5,000" in caption
    assert "spec 180" not in caption and "inflated" not in caption


def test_cnn_findings_compare_test_accuracy_never_the_specification_validation(tmp_path):
    """Our validation accuracy (95 %) beats every specification validation number; the test accuracy (70 %) does
    not: the finding compares the test accuracies."""
    write_run(tmp_path, "vit-2", [0.5, 0.95], [0.5, 0.9], test=0.70)
    write_run(tmp_path, "cnn-resnet", [0.8, 0.93], [0.85, 0.95], test=0.89)
    texts = " ".join(f.text for f in findings(load_study([tmp_path])) if "CNN" in f.topic)
    assert "70.00% test accuracy" in texts and "91.07%" in texts and "21.07 pp more test accuracy" in texts
    assert "89.00% test accuracy" in texts and "91.06%" in texts and "-2.06 pp" in texts
    for _, val, _, _ in CNN_REFERENCE.values():
        assert f"{val:.2f}" not in texts  # no specification validation number in any finding


def test_cnn_overlay_legend_names_the_networks(tmp_path):
    write_run(tmp_path / "runs", "cnn-resnet", [0.5, 0.6], [0.55, 0.65])
    write_run(tmp_path / "runs", "cnn-densenet", [0.4, 0.7], [0.45, 0.75])
    figure = grid_overlay(load_study([tmp_path / "runs"]), "cnn", tmp_path / "figures")
    assert "Legend: the network;" in figure.caption and "optimizer" not in figure.caption
    assert figure.png.exists() and "not run (missing from the grid): cnn-googlenet, cnn-resnetpreact" in figure.caption


def test_memory_table_ranks_and_names_the_device(study):
    table = memory_table(study)
    assert column(table, "Run")[:5] == ["lstm-6", "lstm-5", "lstm-2", "lstm-1", "lstm-3"]
    assert set(column(table, "Device")) == {"cpu (Test CPU)"}
    assert column(table, "Opt. copies")[column(table, "Run").index("vit-4")] == "1"


def test_provenance_flags_batch_limits(tmp_path):
    write_run(tmp_path, "vit-2", [0.3, 0.4], [0.3, 0.5], epochs=10, limit_train_batches=5)
    run = load_study([tmp_path]).get("vit-2")
    assert not run.full_spec
    assert "NOT at its full setting" in run.provenance and "train ≤ 5 batches/epoch" in run.provenance
    row = runs_table(load_study([tmp_path])).rows[0]
    assert row[-2].startswith("NO: train ≤ 5 batches/epoch")


def test_commit_of_a_run_resumed_under_other_commits_lists_each_once_in_order(tmp_path):
    run = write_run(tmp_path, "vit-2", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert load_study([tmp_path]).get("vit-2").commit == "0123456"  # a config.json from before attempts
    attempts = [{"from_epoch": 1, "git_commit": "aaaaaaa1" * 5}, {"from_epoch": 2, "git_commit": "bbbbbbb2" * 5},
                {"from_epoch": 3, "git_commit": "aaaaaaa1" * 5}, {"from_epoch": 3, "git_commit": None}]
    run.write_config({**run.read_config(), "attempts": attempts})
    study = load_study([tmp_path])
    assert study.get("vit-2").commit == "aaaaaaa, bbbbbbb, unknown"
    assert column(runs_table(study), "Commit") == ["aaaaaaa, bbbbbbb, unknown"]


def test_diverged_run_keeps_its_null_values(runs, study):
    assert "null" in (runs / "vit-3" / "metrics.jsonl").read_text()
    run = study.get("vit-3")
    assert run.status == "diverged" and run.final("val_accuracy") is None and run.best == (0.25, 2)


# ------------------------------------------------------------------------------------------------ findings
def test_choices_are_the_planted_ones(study):
    vit = finding_texts(study, "ViT on CIFAR-10: which configuration")
    assert "For wall-clock time: vit-4 " in vit  # not vit-7 (config 7), not vit-3 (diverged)
    assert "vit-4 8.0 s, vit-1 12.0 s, vit-2 12.5 s, vit-6 30.0 s." in vit and "not separated" not in vit
    assert "For generalization: vit-6 " in vit and "70.00% (epoch 5)" in vit and "Runner-up: vit-2" in vit
    assert "beyond the sampling noise" in vit
    lstm = finding_texts(study, "LSTM on Wikitext-2: which configuration")
    assert "For wall-clock time: lstm-3 " in lstm and "lstm-3 35.0 s, lstm-1 40.0 s" in lstm
    assert "For generalization: lstm-5 " in lstm and "150.00 (epoch 10)" in lstm and "not completed: lstm-4" in lstm


def test_wall_clock_choice_does_not_read_the_machines_load_as_cost(tmp_path):
    """Epoch times that overlap (a loaded machine) do not rank configurations: among those the measurements do not
    separate from the quickest, the best on validation is the choice; a clearly slower one is named as such."""
    write_run(tmp_path, "vit-1", rising(0.3, 0.60), rising(0.3, 0.7), seconds=[30.0, 9.5, 29.0, 31.0, 28.0])
    write_run(tmp_path, "vit-3", rising(0.1, 0.20), rising(0.1, 0.2), seconds=[9.0, 9.5, 12.0, 11.0, 10.0])
    write_run(tmp_path, "vit-2", rising(0.3, 0.55), rising(0.3, 0.6), seconds=[12.0, 40.0, 9.8, 11.5, 50.0])
    write_run(tmp_path, "vit-5", rising(0.3, 0.65), rising(0.3, 0.7), seconds=[25.0, 26.0, 24.0, 25.0, 25.0])
    text = finding_texts(load_study([tmp_path]), "ViT on CIFAR-10: which configuration")
    # vit-3 is the quickest (9.0 s, median 10.0 s); vit-1 (9.5 s at best) and vit-2 (9.8 s) are within its
    # median, vit-5 (24.0 s at best) is not
    assert "vit-3 9.0 s, vit-1 9.5 s, vit-2 9.8 s, vit-5 24.0 s" in text
    assert "vit-1 and vit-2 are not separated from vit-3" in text and "median epoch (10.0 s)" in text
    assert "For wall-clock time: vit-1 " in text
    assert "Of these 3, vit-1 reaches the best validation accuracy, 60.00%" in text
    assert "The slowest, vit-5, needs 2.7× vit-3's time at its fastest epoch" in text
    text = finding_texts(load_study([tmp_path]), "configurations 1-4, only the optimizer")
    assert "Adam (vit-1) 60.00% (epoch 5), final training loss 0.750, median 29.0 s/epoch (fastest 9.5 s)" in text


def test_epoch_times_closer_than_the_margin_are_not_a_difference_in_cost(tmp_path):
    """Runs of equal cost spread by a few percent even on a quiet machine: a fastest epoch at most 5 % above the
    other's median does not make a run slower; one further above does."""
    write_run(tmp_path, "vit-6", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], seconds=[95.0, 100.0, 120.0])  # median 100
    write_run(tmp_path, "vit-7", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], seconds=[104.0, 110.0, 106.0])
    write_run(tmp_path, "vit-5", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], seconds=[106.0, 107.0, 108.0])
    study = load_study([tmp_path])
    vit5, vit6, vit7 = (study.get(i) for i in ("vit-5", "vit-6", "vit-7"))
    assert not vit7.slower_than(vit6) and not vit6.slower_than(vit7)  # 104 s against a median of 100 s: 4 %
    assert vit5.slower_than(vit6) and not vit6.slower_than(vit5)  # 106 s: 6 %
    assert "(not separated: the machine's load varied more than the difference)" in finding_texts(
        study, "PreNorm vs PostNorm")


def test_times_of_runs_on_different_devices_are_not_compared(tmp_path):
    """Two CPUs of one name can differ in their vector instructions, and so in speed: runs whose devices differ are
    shown with each device, and their epoch times do not rank them."""
    avx512 = {"device_name": "Test CPU, AVX512"}
    write_run(tmp_path, "vit-6", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], seconds=[100.0, 100.0, 100.0])
    write_run(tmp_path, "vit-7", [0.3, 0.4, 0.5], [0.3, 0.4, 0.5], seconds=[50.0, 50.0, 50.0], environment=avx512)
    write_run(tmp_path, "vit-1", [0.3, 0.4, 0.6], [0.3, 0.4, 0.6], seconds=[60.0, 60.0, 60.0], environment=avx512)
    study = load_study([tmp_path])
    assert study.get("vit-7").device == "cpu (Test CPU, AVX512)" and study.get("vit-6").device == "cpu (Test CPU)"
    text = finding_texts(study, "PreNorm vs PostNorm")
    assert "(not compared: vit-6 trained on cpu (Test CPU), vit-7 on cpu (Test CPU, AVX512))" in text
    assert "slower" not in text
    text = finding_texts(study, "ViT on CIFAR-10: which configuration")
    assert ("These runs trained on different devices (vit-1 on cpu (Test CPU, AVX512); vit-6 on cpu (Test CPU)): "
            "their times compare the devices as much as the configurations.") in text  # vit-7: not among 1-6


def test_a_run_resumed_on_another_device_lists_both(tmp_path):
    run = write_run(tmp_path, "vit-2", [0.3, 0.4], [0.3, 0.4])
    config = run.read_config()
    config["attempts"] = [{"device": "cpu", "device_name": "Test CPU"}, {"device": "cuda:0", "device_name": "H200"},
                          {"device": "cuda:0", "device_name": "H200"}]
    run.write_config(config)
    assert load_study([tmp_path]).get("vit-2").device == "cpu (Test CPU), then cuda:0 (H200)"


def test_problem_3s_questions_are_labelled_as_such_only_for_the_image_models(tmp_path):
    write_run(tmp_path, "lstm-1", [400.0], [700.0], status=None, epochs=10)
    write_run(tmp_path, "vit-2", [0.3, 0.4], [0.3, 0.4])
    topics = {f.topic: f.text for f in findings(load_study([tmp_path]))}
    assert "LSTM on Wikitext-2: memory (as Problem 3 Q7)" in topics
    assert "ViT on CIFAR-10: memory (Problem 3 Q7)" in topics
    text = topics["LSTM on Wikitext-2: overfitting (as Problem 3 Q8)"]
    assert "before its last epoch (1 run):" in text and "ViT on CIFAR-10: overfitting (Problem 3 Q8)" in topics


def test_an_lstm_that_learned_its_embeddings_is_not_the_specifications_model(tmp_path):
    for run_id, embeddings in (("lstm-1", "learned, initialised N(0, 0.02) (no embeddings file given)"),
                               ("lstm-2", "pretrained GPT-1 (frozen, tied to the output layer)")):
        run = write_run(tmp_path, run_id, [400.0], [700.0], status=None, epochs=10)
        config = run.read_config()
        config["task"]["embeddings"] = embeddings
        run.write_config(config)
    study = load_study([tmp_path])
    learned, pretrained = study.get("lstm-1"), study.get("lstm-2")
    assert learned.deviations == ["embeddings learned (spec GPT-1's, frozen)"] and not learned.full_spec
    assert "NOT at its full setting: embeddings learned (spec GPT-1's, frozen)" in learned.provenance
    assert pretrained.deviations == [] and pretrained.full_spec


def test_every_title_and_label_of_the_figures_lies_inside_the_figure(tmp_path, monkeypatch):
    """Unfinished runs have the longest titles; each figure's texts are checked as it is saved."""
    from replab.report import figures

    checked = []
    save = figures._save

    def checked_save(fig, folder, stem, caption):
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        texts = [fig._suptitle] if fig._suptitle else []  # a demo's mark
        for axes in fig.axes:
            texts += [axes.title, axes._left_title, axes.xaxis.label, axes.yaxis.label]
        for text in texts:
            if text.get_text():
                extent = text.get_window_extent(renderer)
                assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, f"{stem}: {text.get_text()!r}"
                assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, f"{stem}: {text.get_text()!r}"
        checked.append(stem)
        return save(fig, folder, stem, caption)

    monkeypatch.setattr(figures, "_save", checked_save)
    write_run(tmp_path, "lstm-1", [400.0], [700.0], status=None, epochs=10)
    write_run(tmp_path, "cnn-densenet", [0.5, 0.6], [0.4, 0.6], status=None, epochs=10)
    write_run(tmp_path, "cnn-resnet", [0.5, 0.6], [0.4, 0.6], environment={"device_name": "Test CPU, AVX512"})
    write_run(tmp_path, "vit-7", [0.3, 0.4], [0.3, 0.4], status=None, epochs=10)
    write_run(tmp_path, "vit-2", [0.3, 0.4], [0.3, 0.4], limit_train_batches=10)  # a demo: marked above the panels
    study = load_study([tmp_path])
    for run in study.runs:
        figures.run_curves(run, tmp_path / "figures")
    for grid in ("cnn", "vit"):
        figures.grid_overlay(study, grid, tmp_path / "figures")  # cnn: one time panel per device, with its name
        figures.memory_bars(study, grid, tmp_path / "figures")
    assert sorted(checked) == ["cnn-densenet-curves", "cnn-memory", "cnn-overlay", "cnn-resnet-curves",
                               "lstm-1-curves", "vit-2-curves", "vit-7-curves", "vit-memory", "vit-overlay"]


def test_the_time_each_run_and_grid_took_adds_up_its_epochs(tmp_path):
    write_run(tmp_path, "vit-1", [0.3, 0.4], [0.3, 0.4], seconds=[3599.0, 1799.0])  # + 1 s validation each
    write_run(tmp_path, "vit-2", [0.3], [0.3], seconds=1799.0, status=None, epochs=10)
    write_run(tmp_path, "lstm-1", [900.0], [950.0], seconds=59.0)
    study = load_study([tmp_path])
    assert column(runs_table(study), "Time") == ["60.0 s", "90.0 min", "30.0 min"]  # lstm-1, vit-1, vit-2
    text = finding_texts(study, "Runs and settings")
    assert "Time the runs took (wall-clock time of their epochs): LSTM on Wikitext-2 60.0 s (1 run); ViT on " \
           "CIFAR-10 2.00 h (2 runs)." in text


def test_runs_of_a_grid_under_different_settings_are_named_by_setting(tmp_path):
    write_run(tmp_path, "cnn-resnet", [0.7], [0.7], environment={"device_name": "AMD EPYC"})
    write_run(tmp_path, "cnn-googlenet", [0.7], [0.7], environment={"device_name": "AMD EPYC"})
    write_run(tmp_path, "cnn-densenet", [0.7], [0.7], environment={"device_name": "AMD EPYC, AVX512"},
              limit_train_batches=5)
    write_run(tmp_path, "vit-1", [0.5], [0.5])
    write_run(tmp_path, "vit-2", [0.5], [0.5])
    text = finding_texts(load_study([tmp_path]), "Runs and settings")
    assert ("The CNNs on CIFAR-10 runs were measured under 2 different settings (device, amp, batch limits, "
            "processes): cpu (AMD EPYC, AVX512), amp none, train ≤ 5 batches/epoch: cnn-densenet; cpu (AMD EPYC), "
            "amp none: cnn-googlenet, cnn-resnet.") in text
    assert "ViT on CIFAR-10 runs were measured" not in text  # one setting: nothing to say


def test_optimizer_findings_carry_their_numbers(study):
    text = finding_texts(study, "ViT on CIFAR-10: configurations 1-4")
    assert "Adam (vit-1) 60.00% (epoch 10)" in text and "vit-3 diverged (3/10 epochs)" in text
    assert "Effect of weight decay" in text and "+2.00 pp" in text
    assert "Effect of momentum" not in text  # vit-3 (plain SGD) diverged: nothing to compare momentum with
    lstm = finding_texts(study, "LSTM on Wikitext-2: configurations 1-4")
    assert "Adam against SGD)" in lstm and "lstm-4 missing" in lstm


def test_prenorm_postnorm_finding(study):
    text = finding_texts(study, "PreNorm vs PostNorm")
    assert "70.00% (epoch 5) vs 72.00% (epoch 10)" in text and "vit-7 better" in text
    assert ("training time median 30.0 s/epoch (fastest 30.0 s) vs median 5.0 s/epoch (fastest 5.0 s) (vit-6 slower"
            in text)


def test_no_prenorm_postnorm_finding_without_vit7(tmp_path):
    study = load_study([write_study(tmp_path, with_vit7=False)])
    assert study.missing("vit") == ["vit-7"]
    assert not finding_texts(study, "PreNorm") and "PostNorm" not in "\n".join(f.text for f in findings(study)
                                                                              if "Problem 3 Q5" in f.topic)
    assert "vit-7" in finding_texts(study, "Runs and settings")


def test_overfitting_and_memory_findings(study):
    overfitting = finding_texts(study, "ViT on CIFAR-10: overfitting")
    assert "largest vit-6 (train 90.00%, validation 65.00%, gap +25.00 pp)" in overfitting
    assert "vit-6 peaked at epoch 5 of 10 (5 epochs before the end" in overfitting and "vit-3 peaked" not in overfitting
    memory = finding_texts(study, "ViT on CIFAR-10: memory")
    assert "vit-6 1,400 > vit-7 1,400 > vit-5 1,250" in memory and "2 extra copies" in memory
    assert "each added layer adds 72.5 MiB" in memory  # slope of 1,110 / 1,250 / 1,400 MiB at 2 / 4 / 6 layers


# ------------------------------------------------------------------------------------------------ files
def test_figures_exist_as_png_and_pdf_at_print_resolution(study, report):
    stems = [f"{r.id}-curves" for r in study.runs] + ["lstm-overlay", "vit-overlay", "lstm-memory", "vit-memory"]
    for stem in stems:
        assert (report / "figures" / f"{stem}.pdf").stat().st_size > 1000, stem
        with Image.open(report / "figures" / f"{stem}.png") as image:
            dpi = image.info["dpi"][0]
            assert dpi >= 200 and abs(image.width / dpi - 3.5) < 0.05, stem  # column width
    for key in ("runs", "lstm-results", "attention-parameters", "vit-results", "cnn-comparison", "memory",
                "overfitting", "epochs"):
        assert (report / "tables" / f"{key}.md").exists() and (report / "tables" / f"{key}.tex").exists()


def test_captions_are_numbered_in_order(report):
    markdown = (report / "report.md").read_text()
    for kind, count in (("Figure", 16), ("Table", 8)):
        numbers = [int(n) for n in re.findall(rf"^\*\*{kind} (\d+)\.\*\* \S", markdown, re.MULTILINE)]
        assert numbers == list(range(1, count + 1))
    assert "missing from the grid (never run): lstm-4" in markdown


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 16 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'<(link|script|iframe|object)|href=|url\(|@import|src="(?!data:image/png;base64,)', page)
    assert "<strong>70.00 (5)</strong>" in page


def test_html_with_linked_figures_points_at_the_figure_files(report, linked_report):
    embedded, linked = (report / "report.html").read_text(), (linked_report / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', linked)
    assert len(sources) == 16 and all(re.fullmatch(r"figures/[\w-]+\.png", s) for s in sources)
    assert all((linked_report / s).is_file() for s in sources) and "base64" not in linked
    stems = re.findall(r'<figure id="([^"]*)"><img src="data:', embedded)
    assert sources == [f"figures/{stem}.png" for stem in stems]  # the same figures in the same places
    assert re.sub(r'<img src="[^"]*"', "", linked) == re.sub(r'<img src="[^"]*"', "", embedded)
    assert len(linked) * 20 < len(embedded)
    assert (linked_report / "report.md").read_text() == (report / "report.md").read_text()


IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement("pre");
  out.textContent = "image-check " + images.length + " " + decoded;
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.parametrize("kind", ["embedded", "linked"])
def test_html_images_decode_in_headless_chromium(kind, request, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser check is skipped")
    folder = tmp_path / "report"  # a test-only copy (linked figures load from beside the page)
    shutil.copytree(request.getfixturevalue("report" if kind == "embedded" else "linked_report"), folder)
    page = folder / "check.html"
    page.write_text((folder / "report.html").read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r"image-check (\d+) (\d+)", result.stdout)
    assert match, result.stderr[-2000:]
    assert match.group(1) == match.group(2) == "16"


def test_report_of_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "absent"), "--out", str(tmp_path / "report")]) == 2
    assert "no such runs folder" in capsys.readouterr().err


def test_perplexity_differences_below_one_percent_are_not_called(tmp_path):
    write_run(tmp_path, "lstm-1", [300.0, 180.0], [400.0, 120.0])
    write_run(tmp_path, "lstm-2", [300.0, 180.5], [400.0, 121.0])
    study = load_study([tmp_path])
    text = finding_texts(study, "configurations 1-4")
    assert "too small to separate lstm-2 and lstm-1" in text and "better" not in text
    assert "gap +0.405 nats (validation perplexity ×1.50 the training one)" in finding_texts(study, "overfitting")
