"""What the figures never hide: runs of different devices on one time axis, slow epochs and restarts, the points of
a log axis beyond its labels; captions that name what the labels show; one-run grids without a one-curve overlay or a
one-bar chart; and an HTML page whose figures use its width and whose tables scroll rather than wrap ids."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_hex

from replab.report import figures
from replab.report.document import write_report
from replab.report.figures import grid_overlay, log_ticks, memory_bars, run_curves, slow_epochs
from replab.report.study import load_study
from tests.report.fakes import rising, write_run

AVX512 = {"device_name": "Test CPU, AVX512"}


@pytest.fixture
def saved(monkeypatch):
    """The matplotlib figure of every figure saved, by stem (drawn, so that tick labels exist)."""
    found = {}
    save = figures._save

    def keeping_save(fig, folder, stem, caption):
        fig.canvas.draw()
        found[stem] = fig
        return save(fig, folder, stem, caption)

    monkeypatch.setattr(figures, "_save", keeping_save)
    return found


def _time_panels(fig):
    return [ax for ax in fig.axes if ax.get_xlabel().startswith("wall-clock time")]


def _drawn_x(ax) -> list[float]:
    return [x for line in ax.get_lines() for x in line.get_xdata() if not math.isnan(x)]


def test_runs_of_two_devices_get_a_time_panel_each(tmp_path, saved):
    runs = tmp_path / "runs"
    write_run(runs, "cnn-resnet", rising(0.5, 0.8, 4), rising(0.5, 0.9, 4), seconds=100.0)
    write_run(runs, "cnn-googlenet", rising(0.5, 0.7, 4), rising(0.5, 0.8, 4), seconds=120.0)
    write_run(runs, "cnn-densenet", rising(0.5, 0.75, 4), rising(0.5, 0.8, 4), seconds=1000.0, environment=AVX512)
    figure = grid_overlay(load_study([runs]), "cnn", tmp_path / "figures")
    panels = _time_panels(saved["cnn-overlay"])
    # in the grid's order (cnn-densenet first); each panel's time axis spans its own runs only
    assert [ax.get_title(loc="left") for ax in panels] == ["on cpu (Test CPU, AVX512)", "on cpu (Test CPU)"]
    assert max(_drawn_x(panels[0])) == pytest.approx(4 * 1001 / 60)  # minutes: 4 epochs of 1,000 s + 1 s eval
    assert max(_drawn_x(panels[1])) == pytest.approx(4 * 121 / 60)  # the googlenet run's 4 epochs of 121 s
    assert "one panel per device (2 below: times are compared only on one device)" in figure.caption


def test_runs_of_one_device_share_one_time_panel(tmp_path, saved):
    runs = tmp_path / "runs"
    write_run(runs, "vit-1", rising(0.3, 0.6, 3), rising(0.3, 0.7, 3))
    write_run(runs, "vit-2", rising(0.3, 0.62, 3), rising(0.3, 0.7, 3))
    figure = grid_overlay(load_study([runs]), "vit", tmp_path / "figures")
    (panel,) = _time_panels(saved["vit-overlay"])
    assert panel.get_title(loc="left") == "" and "one panel per device" not in figure.caption


def test_memory_bars_of_two_devices_are_coloured_by_device_and_named_in_the_caption(tmp_path, saved):
    runs = tmp_path / "runs"
    write_run(runs, "cnn-resnet", [0.5, 0.6], [0.5, 0.6], memory=950.0)
    write_run(runs, "cnn-googlenet", [0.5, 0.6], [0.5, 0.6], memory=1700.0)
    write_run(runs, "cnn-densenet", [0.5, 0.6], [0.5, 0.6], memory=2000.0, environment=AVX512)
    figure = memory_bars(load_study([runs]), "cnn", tmp_path / "figures")
    (ax,) = saved["cnn-memory"].axes
    colours = {label.get_text(): None for label in ax.get_yticklabels()}
    for patch in ax.patches:  # each bar at the position of its label
        y = patch.get_y() + patch.get_height() / 2
        label = next(t.get_text() for t in ax.get_yticklabels() if abs(t.get_position()[1] - y) < 0.01)
        colours[label] = to_hex(patch.get_facecolor())
    assert colours["ResNet"] == colours["GoogleNet"] != colours["DenseNet"]
    assert ("blue bars on cpu (Test CPU, AVX512): cnn-densenet; green bars on cpu (Test CPU): cnn-googlenet, "
            "cnn-resnet (bars of different colours compare the devices as much as the configurations)") in \
        figure.caption


def test_captions_name_what_the_labels_show(tmp_path, saved):
    runs = tmp_path / "runs"
    write_run(runs, "cnn-resnet", [0.5, 0.6], [0.5, 0.6])
    write_run(runs, "cnn-densenet", [0.5, 0.6], [0.5, 0.6])
    write_run(runs, "vit-1", rising(0.3, 0.6, 10), rising(0.3, 0.6, 10))  # 10 epochs: no demo
    write_run(runs, "vit-2", rising(0.3, 0.6, 10), rising(0.3, 0.6, 10))
    study = load_study([runs])
    cnn, vit = memory_bars(study, "cnn", tmp_path / "f"), memory_bars(study, "vit", tmp_path / "f")
    assert [t.get_text() for t in saved["cnn-memory"].axes[0].get_yticklabels()] == ["DenseNet", "ResNet"]
    assert "labels: the network." in cnn.caption and "experiment number" not in cnn.caption
    assert [t.get_text() for t in saved["vit-memory"].axes[0].get_yticklabels()] == ["1 Adam 2L", "2 AdamW 2L"]
    assert "labels: experiment number, optimizer, number of layers (L)." in vit.caption


def test_a_slow_epoch_is_drawn_as_a_break_and_named_and_so_is_a_restart(tmp_path, saved):
    run_dir = write_run(tmp_path / "runs", "cnn-googlenet", rising(0.5, 0.8, 5), rising(0.5, 0.9, 5),
                        seconds=[600.0, 610.0, 2115.0, 590.0, 600.0])  # epoch 3: 25 min more than the median
    config = run_dir.read_config()
    config["attempts"] = [{"from_epoch": 1, "from_step": 0}, {"from_epoch": 4, "from_step": 0},
                          {"from_epoch": 5, "from_step": 140}]
    run_dir.write_config(config)
    run = load_study([tmp_path / "runs"]).get("cnn-googlenet")
    assert slow_epochs(run) == [(3, 2115.0 - 600.0)]
    figure = run_curves(run, tmp_path / "figures")
    assert ("dotted on the time axis: an epoch over 5 min and 1.5× longer than its run's median (a pause, or other "
            "work on the machine): cnn-googlenet epoch 3 (+25.2 min)") in figure.caption
    assert ("restarted (the time between a run's processes is not on the axis): cnn-googlenet before epoch 4, in "
            "epoch 5 (step 140)") in figure.caption
    (panel,) = _time_panels(saved["cnn-googlenet-curves"])
    dotted = [line for line in panel.get_lines() if line.get_linestyle() == ":"]
    wall = [s / 60 for s in run.series("wall_seconds")]
    assert [list(line.get_xdata()) for line in dotted] == [wall[1:3], wall[1:3]]  # train and validation
    solid = [line for line in panel.get_lines() if line.get_label() == "train"][0]
    assert math.isnan(list(solid.get_xdata())[2])  # the break: the solid curve skips the slow epoch


def test_epochs_slower_by_little_or_by_a_small_ratio_are_no_break(tmp_path):
    write_run(tmp_path, "vit-1", rising(0.3, 0.6, 4), rising(0.3, 0.7, 4), seconds=[100.0, 100.0, 399.0, 100.0])
    write_run(tmp_path, "vit-2", rising(0.3, 0.6, 4), rising(0.3, 0.7, 4), seconds=[3600.0, 3600.0, 5000.0, 3600.0])
    study = load_study([tmp_path])
    assert slow_epochs(study.get("vit-1")) == [] and slow_epochs(study.get("vit-2")) == []  # +299 s; 1.39×


@given(st.floats(min_value=1e-3, max_value=1e6), st.floats(min_value=1.0, max_value=1e4))
def test_log_ticks_label_a_tick_at_or_beyond_both_ends(low, factor):
    high = low * factor
    ticks = log_ticks(low, high)
    assert ticks[0] <= low * (1 + 1e-9) and ticks[-1] >= high * (1 - 1e-9)
    assert ticks == sorted(ticks) and len(ticks) >= 4


def test_every_point_of_a_log_axis_lies_between_labelled_ticks(tmp_path, saved):
    """The published lstm-1's perplexities: the lowest (165.33) used to sit below the last label (200)."""
    write_run(tmp_path, "lstm-1", [402.90, 273.42, 225.61], [723.37, 270.49, 165.33], status=None, epochs=10)
    run_curves(load_study([tmp_path]).get("lstm-1"), tmp_path / "figures")
    top = saved["lstm-1-curves"].axes[0]
    assert top.get_yscale() == "log"
    labelled = [float(t.get_text().replace(",", "")) for t in top.get_yticklabels() if t.get_text()]
    low, high = top.get_ylim()
    labelled = [t for t in labelled if low <= t <= high]
    points = [y for line in top.get_lines() for y in line.get_ydata()]
    assert len(labelled) >= 4 and min(labelled) <= min(points) and max(labelled) >= max(points)


def test_a_linear_axis_of_values_close_together_writes_its_ticks_without_an_offset(tmp_path, saved):
    """A quick run's SGD losses barely move (10.6070 to 10.6080 nats): the ticks used to read 0.0070 ... 0.0080
    under a '+1.06e1' to add in one's head."""
    perplexities = [math.exp(10.6070), math.exp(10.6075), math.exp(10.6080)]
    write_run(tmp_path, "lstm-3", perplexities, perplexities, epochs=3)
    run_curves(load_study([tmp_path]).get("lstm-3"), tmp_path / "figures")
    loss = saved["lstm-3-curves"].axes[1]
    assert loss.get_ylabel().startswith("loss")
    assert loss.yaxis.get_offset_text().get_text() == ""
    labels = [float(t.get_text().replace("−", "-")) for t in loss.get_yticklabels() if t.get_text()]
    assert labels and all(10.5 < value < 10.7 for value in labels)


def test_a_grid_of_one_run_gets_no_overlay_and_no_one_bar_chart(tmp_path):
    write_run(tmp_path / "runs", "lstm-1", [402.90, 273.42, 225.61], [723.37, 270.49, 165.33], status=None, epochs=10)
    write_run(tmp_path / "runs", "vit-1", [0.3, 0.4], [0.3, 0.4])
    write_run(tmp_path / "runs", "vit-2", [0.3, 0.5], [0.3, 0.5])
    report = write_report([tmp_path / "runs"], tmp_path / "report")
    stems = [f.stem for f in report.figures]
    assert "lstm-overlay" not in stems and "lstm-memory" not in stems and "lstm-1-curves" in stems
    assert "vit-overlay" in stems and "vit-memory" in stems
    markdown = (tmp_path / "report" / "report.md").read_text().replace("\n", " ")
    assert ("One LSTM on Wikitext-2 run has a completed epoch, lstm-1: its figure below shows it; the overlay of "
            "every configuration comes with a second run.") in markdown


def test_html_figures_share_rows_and_tables_scroll_without_wrapping_ids(tmp_path):
    write_run(tmp_path / "runs", "cnn-resnetpreact", [0.5, 0.6], [0.5, 0.6], seconds=1900.0)
    write_run(tmp_path / "runs", "vit-1", [0.3, 0.4], [0.3, 0.4], limit_train_batches=5)
    write_report([tmp_path / "runs"], tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert re.search(r"\.figures \{ display: flex; flex-wrap: wrap;", style)
    assert re.search(r"th, td \{[^}]*white-space: nowrap", style) and ".table { overflow-x: auto;" in style
    groups = re.findall(r'<div class="figures">(.*?)</div>\n(?!<figure)', page, re.DOTALL)
    assert sum(group.count("<figure ") for group in groups) == page.count("<figure ")
    assert '<td class="l">cnn-resnetpreact</td>' in page and '<td class="l">63.4 min</td>' in page
    assert '<td class="l w">NO: train ≤ 5 batches/epoch; epochs 2 (spec 10)</td>' in page  # long text may wrap
