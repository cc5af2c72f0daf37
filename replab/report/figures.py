"""The report's figures, drawn with matplotlib (Agg) at column width and saved as PNG (300 dpi) and PDF.

Per run: learning curves (LSTM: perplexity and loss over epochs, Problem 1 Q3; ViT and CNN: accuracy over
epochs and over wall-clock time, Problem 3 Q1). Per grid of two runs or more: an overlay of every configuration's
validation curve, and the memory of every configuration (bar chart). Per configuration trained in two precisions
(a grid run and its side run): their validation curves and relative difference (``precision_figure``).

What the figures never hide: time axes hold the runs of one device each (one wall-clock panel per device); an epoch
that took minutes longer than its run's usual ones (a pause, or other work on the machine) is drawn dotted and named
in the caption, as are restarts (the time between a run's processes is not on its time axis); a figure that draws a
demo run (``replab.report.demo``) says so on the figure and in its caption; log axes label a tick at or beyond both
ends of the data.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

from replab.report.demo import caption_note, figure_mark  # noqa: E402
from replab.report.formatting import fmt_metric, fmt_seconds, is_number, metric_title, scale  # noqa: E402
from replab.report.precision import PRECISION_TOLERANCE, precision, relative_differences  # noqa: E402
from replab.report.reference import GRID_TITLES  # noqa: E402
from replab.report.runs import RunView  # noqa: E402
from replab.report.study import Study  # noqa: E402

logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting chatter while saving PDFs

COLUMN_WIDTH = 3.5  # inches
DPI = 300
STYLE = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 3, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "savefig.dpi": DPI, "figure.dpi": 100,
}
TRAIN, VALID = "-", "--"
MARKERS = "osD^vPX"  # one per configuration in the overlays, so that overlapping curves stay apart
DEVICE_COLORS = ("C0", "C2", "C4", "C5", "C8")  # memory bars: one colour per device
DEMO_COLOR = "#c0392b"
# An epoch is drawn as a break (dotted) when it took this much longer than its run's median epoch, and this many
# times as long: a pause, or other work on the machine (a quiet run's epochs spread by a few percent).
PAUSE_SECONDS, PAUSE_RATIO = 300.0, 1.5


@dataclass
class Figure:
    """A saved figure: ``figures/<stem>.png`` and ``.pdf``; ``number`` is set when the report is assembled."""

    stem: str
    caption: str
    png: Path
    pdf: Path
    number: int | None = None

    @property
    def label(self) -> str:
        return f"Figure {self.number}" if self.number else "Figure"


def _mark_demo(fig, runs: list[RunView]) -> str:
    """Mark a figure that draws a demo run: its setting above the panels and ``DEMO`` across each of them; returns
    the clause its caption ends with (empty for a figure without a demo run)."""
    mark = figure_mark(runs)
    if mark is None:
        return ""
    fig.suptitle(mark, color=DEMO_COLOR, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    for ax in fig.axes:
        ax.text(0.5, 0.5, "DEMO", transform=ax.transAxes, ha="center", va="center", fontsize=30, color=DEMO_COLOR,
                alpha=0.13, rotation=20, fontweight="bold", zorder=0)
    return caption_note(runs)


def _finish(fig, folder: Path, stem: str, caption: str, runs: list[RunView]) -> Figure:
    """Every figure's last step: marked where it draws a demo run (``_mark_demo``, also ending the caption), saved."""
    return _save(fig, folder, stem, caption + _mark_demo(fig, runs) + ".")


def _save(fig, folder: Path, stem: str, caption: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
    fig.savefig(png, dpi=DPI)
    fig.set_layout_engine("none")  # keep the layout just computed: the PDF is the same figure
    fig.savefig(pdf, metadata={"CreationDate": None})  # no date: the same runs give the same file
    plt.close(fig)
    return Figure(stem, caption, png, pdf)


def styled(draw):
    """Draw the figure under the report's style (font sizes, grid...), leaving the global style alone."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _new_figure(rows: int, height_per_row: float = 1.9):
    fig, axes = plt.subplots(rows, 1, figsize=(COLUMN_WIDTH, 0.5 + height_per_row * rows), layout="constrained",
                             squeeze=False)
    return fig, list(axes[:, 0])


def time_axis(seconds: list[float]) -> tuple[float, str]:
    """A divisor and unit that keep wall-clock tick labels short (s, min or h)."""
    longest = max([s for s in seconds if is_number(s)], default=0)
    if longest < 180:
        return 1.0, "s"
    if longest < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _scaled(values: list[float], metric: str) -> list[float]:
    return [v if (v := scale(x, metric)) is not None else math.nan for x in values]


def _mark_best(ax, run: RunView, x: list[float], metric: str, color: str = "C1") -> None:
    """A star on the best validation score, or a cross on the last finite point of a diverged run."""
    values = _scaled(run.series(f"val_{metric}"), metric)
    finite = [(xi, v) for xi, v in zip(x, values, strict=True) if not math.isnan(v)]
    best, epoch = run.best
    crossed = finite[-1] if run.status == "diverged" and finite else None
    if crossed:
        ax.plot(*crossed, marker="x", markersize=6, markeredgewidth=1.5, color=color, linestyle="none", zorder=5)
    if best is not None and epoch in run.epochs:
        point = (x[run.epochs.index(epoch)], scale(best, metric))
        if point != crossed:
            ax.plot(*point, marker="*", markersize=8, color=color, markeredgecolor="black", markeredgewidth=0.5,
                    linestyle="none", zorder=5)


def _status_note(run: RunView) -> str:
    return "" if run.status == "completed" else f" ({run.status})"


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Whole epochs, with half an epoch of room on either side (also for a single epoch)."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs, default=1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _time_axis(ax, values: list[float], unit: str) -> None:
    """Wall-clock time from zero, with room for the markers of the last point."""
    ax.set_xlabel(f"wall-clock time since the start of training ({unit})")
    ax.set_xlim(0, max([v for v in values if is_number(v)], default=1) * 1.05)


# Tick values of a log axis, coarsest first: the mantissas of each decade that may carry a label.
LOG_MANTISSAS = ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8),
                 tuple(round(1 + k / 10, 1) for k in range(10)) + (2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def log_ticks(low: float, high: float, at_least: int = 4) -> list[float]:
    """Labelled ticks of a log axis showing ``low``..``high`` (both > 0): from the tick at or below ``low`` to the
    one at or above ``high``, so that every point lies between two labels, and at least ``at_least`` of them (the
    coarsest mantissas that give as many; a range too narrow for the finest is widened)."""
    while True:
        first, last = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
        for mantissas in LOG_MANTISSAS:
            ticks = sorted({float(f"{m * 10.0 ** k:.6g}") for k in range(first, last + 1) for m in mantissas})
            below, above = max(t for t in ticks if t <= low), min(t for t in ticks if t >= high)
            shown = [t for t in ticks if below <= t <= above]
            if len(shown) >= at_least:
                return shown
        low, high = low / 1.2, high * 1.2  # a narrow range (one point): widened until it holds enough ticks


def _log_axis(ax) -> None:
    """A log y axis labelled as plain numbers (20,000 rather than 2e+04) on ``log_ticks`` of what it draws."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if is_number(y) and y > 0]
    ax.set_yscale("log")
    if not values:
        return
    ticks = log_ticks(min(values), max(values))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(lambda x, pos: f"{x:,.6g}")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(ticks[0] / 1.03, ticks[-1] * 1.03)


def _y_axis(ax, label: str, log: bool = False) -> None:
    """Label the y axis; a log axis is scaled to what is drawn on it, so call this after drawing. A linear axis
    writes its ticks in full: values close together (10.6070 to 10.6080) get no ``+1.06e1`` offset to add."""
    ax.set_ylabel(label)
    if log:
        _log_axis(ax)
    else:
        ax.ticklabel_format(axis="y", useOffset=False)


def slow_epochs(run: RunView) -> list[tuple[int, float]]:
    """(epoch, seconds beyond the run's median epoch) of each epoch that took over ``PAUSE_SECONDS`` more than the
    median and ``PAUSE_RATIO`` times it: a pause, or other work on the machine."""
    median = run.median_epoch_seconds
    if median is None:
        return []
    return [(epoch, seconds - median) for epoch, seconds in zip(run.epochs, run.series("train_seconds"), strict=True)
            if is_number(seconds) and seconds - median > PAUSE_SECONDS and seconds > PAUSE_RATIO * median]


def restarts(run: RunView) -> list[str]:
    """Where each later process of the run took over: ``before epoch 8``, ``in epoch 5 (step 140)``."""
    attempts = run.record.config.get("attempts") or []
    found = []
    for attempt in attempts[1:]:
        epoch, step = attempt.get("from_epoch") or 1, attempt.get("from_step")
        found.append(f"in epoch {epoch} (step {step})" if step else f"before epoch {epoch}")
    return found


def time_notes(runs: list[RunView]) -> str:
    """The caption's clause on the time axes: the slow epochs drawn dotted, and the restarts (empty if none)."""
    slow = [f"{r.key} epoch{'s' if len(found) > 1 else ''} " + ", ".join(f"{epoch} (+{fmt_seconds(extra)})"
                                                                         for epoch, extra in found)
            for r in runs if (found := slow_epochs(r))]
    restarted = [f"{r.key} {', '.join(where)}" for r in runs if (where := restarts(r))]
    notes = []
    if slow:
        notes.append(f"dotted on the time axis: an epoch over {PAUSE_SECONDS / 60:.0f} min and {PAUSE_RATIO}× longer "
                     f"than its run's median (a pause, or other work on the machine): {'; '.join(slow)}")
    if restarted:
        notes.append(f"restarted (the time between a run's processes is not on the axis): {'; '.join(restarted)}")
    return "".join(f"; {note}" for note in notes)


def _plot(ax, run: RunView, x: list[float], y: list[float], style: str, time_axis: bool = False, **kwargs):
    """One curve; on a time axis, the stretch of each slow epoch (``slow_epochs``) drawn dotted, as a break."""
    slow = {run.epochs.index(epoch) for epoch, _ in slow_epochs(run)} if time_axis else set()
    slow.discard(0)  # the first epoch has no segment leading to it
    if not slow:
        return ax.plot(x, y, style, **kwargs)
    xs, ys = [], []
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        if i in slow:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(xi)
        ys.append(yi)
    lines = ax.plot(xs, ys, style, **kwargs)
    for i in sorted(slow):
        ax.plot(x[i - 1:i + 1], y[i - 1:i + 1], ":", color=lines[0].get_color(), linewidth=1.0)
    return lines


def _train_val(ax, run: RunView, x: list[float], key: str, metric: str, time_axis: bool = False) -> None:
    """Training (solid) and validation (dashed) curves of one quantity (``loss`` or the metric)."""
    scale_as = metric if key == metric else "loss"
    marker = "o" if len(x) <= 20 else None
    _plot(ax, run, x, _scaled(run.series(f"train_{key}"), scale_as), TRAIN, time_axis, marker=marker, color="C0",
          label="train")
    _plot(ax, run, x, _scaled(run.series(f"val_{key}"), scale_as), VALID, time_axis, marker=marker, color="C1",
          label="validation")


@styled
def run_curves(run: RunView, folder: Path) -> Figure:
    """LSTM: perplexity and loss over epochs; ViT/CNN: accuracy over epochs and over wall-clock time."""
    metric, epochs = run.metric, run.epochs
    fig, (top, bottom) = _new_figure(2)
    _train_val(top, run, epochs, metric, metric)
    _mark_best(top, run, epochs, metric)
    _epoch_axis(top, epochs)
    _y_axis(top, metric_title(metric), log=metric == "perplexity")
    # the status on a line of its own: with it, the title is wider than the one-column figure
    top.set_title(run.description + ("" if run.status == "completed" else f"\n{run.status_text}"), loc="left")
    top.legend(loc="best")
    best, epoch = run.best
    best_text = f"Best validation {metric} {fmt_metric(best, metric)} at epoch {epoch} (star)" if best else \
        "No validation score"
    if metric == "perplexity":
        _train_val(bottom, run, epochs, "loss", metric)
        _epoch_axis(bottom, epochs)
        _y_axis(bottom, "loss (mean NLL per token, nats)")
        what = "perplexity (top, log scale) and loss in nats (bottom) over epochs"
    else:
        divisor, unit = time_axis(run.series("wall_seconds"))
        wall = [s / divisor for s in run.series("wall_seconds")]
        _train_val(bottom, run, wall, metric, metric, time_axis=True)
        _mark_best(bottom, run, wall, metric)
        _time_axis(bottom, wall, unit)
        _y_axis(bottom, metric_title(metric))
        what = "accuracy over epochs (top) and over wall-clock time, evaluation included (bottom)"
    notes = [best_text, run.status_text]
    notes += ["a cross marks the last finite point before divergence"] if run.status == "diverged" else []
    notes += [run.not_full_text] if not run.full_spec else []
    times = time_notes([run]) if metric != "perplexity" else ""
    caption = (f"{run.description}, {run.hyperparameters}: training (solid) and validation (dashed) {what}. "
               + "; ".join(notes) + times)
    return _finish(fig, folder, f"{run.key}-curves", caption, [run])


def by_device(runs: list[RunView]) -> dict[str, list[RunView]]:
    """The runs grouped by the device they trained on, in their order (a run resumed elsewhere: its own group)."""
    groups: dict[str, list[RunView]] = {}
    for run in runs:
        groups.setdefault(run.device, []).append(run)
    return groups


@styled
def grid_overlay(study: Study, grid: str, folder: Path) -> Figure | None:
    """Validation curves of every configuration of a grid over epochs, and over wall-clock time with one panel per
    device (times are never compared across devices). None for fewer than two runs with an epoch: the run's own
    figure shows it."""
    runs = [r for r in study.grid(grid) if r.epochs_completed]
    if len(runs) < 2:
        return None
    metric = runs[0].metric
    devices = by_device(runs)
    fig, axes = _new_figure(1 + len(devices), height_per_row=1.8)
    top = axes[0]
    colors = {run.key: f"C{index % 10}" for index, run in enumerate(runs)}
    for index, run in enumerate(runs):
        style = "--" if run.experiment.get("block") == "postnorm" else "-"
        values = _scaled(run.series(f"val_{metric}"), metric)
        top.plot(run.epochs, values, style, color=colors[run.key], marker=MARKERS[index % len(MARKERS)]
                 if len(values) <= 20 else None, label=run.short_label + _status_note(run))
        _mark_best(top, run, run.epochs, metric, colors[run.key])
    for ax, (device, on_device) in zip(axes[1:], devices.items(), strict=True):
        seconds = [s for r in on_device for s in r.series("wall_seconds")]
        divisor, unit = time_axis(seconds)
        for run in on_device:
            style = "--" if run.experiment.get("block") == "postnorm" else "-"
            wall = [s / divisor for s in run.series("wall_seconds")]
            _plot(ax, run, wall, _scaled(run.series(f"val_{metric}"), metric), style, time_axis=True,
                  color=colors[run.key])
            _mark_best(ax, run, wall, metric, colors[run.key])
        _time_axis(ax, [s / divisor for s in seconds], unit)
        if len(devices) > 1:
            ax.set_title(f"on {device}", loc="left", fontsize=STYLE["legend.fontsize"])
    log = metric == "perplexity"
    _epoch_axis(top, [e for r in runs for e in r.epochs])
    for ax in axes:
        _y_axis(ax, f"validation {metric_title(metric)}", log=log)
    top.set_title(f"{GRID_TITLES[grid]}: every configuration", loc="left")
    cnn = grid == "cnn"  # CNN labels are the network's name; ViT/LSTM labels its number, optimizer and layers
    fig.legend(loc="outside lower center", ncol=2, title="Model" if cnn else "No. optimizer layers")
    missing = study.missing(grid)
    panels = ("wall-clock time (bottom)" if len(devices) == 1 else
              f"wall-clock time, one panel per device ({len(devices)} below: times are compared only on one device)")
    caption = (f"{GRID_TITLES[grid]}: validation {metric} of every configuration over epochs (top) and over "
               f"{panels}{'; log scale, lower is better' if log else '; higher is better'}. "
               + ("Legend: the network" if cnn else "Legend: experiment number, optimizer, number of layers (L)")
               + f"{'; dashed: PostNorm' if grid == 'vit' else ''}; a star marks each run's best validation score"
               f"{', a cross the last point of a diverged run' if any(r.status == 'diverged' for r in runs) else ''}"
               + (f"; not run (missing from the grid): {', '.join(missing)}" if missing else "")
               + time_notes(runs))
    return _finish(fig, folder, f"{grid}-overlay", caption, runs)


@styled
def memory_bars(study: Study, grid: str, folder: Path) -> Figure | None:
    """Steady-state mean (bar) and peak (tick) memory of every configuration of a grid, the bars coloured by device
    where the runs trained on several. None for fewer than two runs with a memory record (the memory table shows
    one)."""
    runs = [r for r in study.grid(grid) if is_number(r.memory.get("steady_mean_mb"))]
    if len(runs) < 2:
        return None
    fig, (ax,) = _new_figure(1, height_per_row=0.25 * len(runs) + 0.8)
    positions = list(range(len(runs)))[::-1]
    means = [r.memory["steady_mean_mb"] for r in runs]
    peaks = [r.memory.get("peak_mb") for r in runs]
    devices = list(by_device(runs))
    color = {device: DEVICE_COLORS[i % len(DEVICE_COLORS)] for i, device in enumerate(devices)}
    handles = []
    for device in devices:
        on_device = [i for i, r in enumerate(runs) if r.device == device]
        label = "steady-state mean" + (f", {device}" if len(devices) > 1 else "")
        handles.append(ax.barh([positions[i] for i in on_device], [means[i] for i in on_device], height=0.6,
                               color=color[device], label=label))
    (ticks,) = ax.plot([p if is_number(p) else math.nan for p in peaks], positions, "|", color="C3", markersize=9,
                       markeredgewidth=1.5, label="peak")
    for y, mean in zip(positions, means, strict=True):
        ax.text(mean * 0.98, y, f"{mean:,.0f}", ha="right", va="center", fontsize=6.5, color="white")
    ax.set_yticks(positions, [r.short_label + _status_note(r) for r in runs])
    ax.set_xlim(0, max(means + [p for p in peaks if is_number(p)]) * 1.08)
    ax.grid(axis="y", visible=False)
    fig.legend(handles=[*handles, ticks], loc="outside lower center", ncol=1 if len(devices) > 1 else 2)
    sources = sorted({str(r.memory.get("source")) for r in runs})
    ax.set_xlabel(f"memory (MiB; {', '.join(sources)})")
    ax.set_title(f"{GRID_TITLES[grid]}: memory", loc="left")  # short: it starts after the bar labels
    where = (f" on {devices[0]}" if len(devices) == 1 else "; " + "; ".join(
        f"{name} bars on {device}: {', '.join(r.key for r in runs if r.device == device)}"
        for device, name in zip(devices, _color_names(devices), strict=True))
        + " (bars of different colours compare the devices as much as the configurations)")
    caption = (f"{GRID_TITLES[grid]}: memory of each configuration in MiB, the mean of the steady-state samples "
               f"after warm-up (bar, value inside) and the peak (red tick). Measured as {', '.join(sources)} (rss: "
               "resident memory of the training process, with the Python runtime and the dataset; nvml: the "
               f"process's device memory as nvidia-smi shows it){where}; labels: "
               + ("the network" if grid == "cnn" else "experiment number, optimizer, number of layers (L)"))
    return _finish(fig, folder, f"{grid}-memory", caption, runs)


def _color_names(devices: list[str]) -> list[str]:
    names = {"C0": "blue", "C2": "green", "C4": "purple", "C5": "brown", "C8": "olive"}
    return [names[DEVICE_COLORS[i % len(DEVICE_COLORS)]] for i in range(len(devices))]


@styled
def precision_figure(member: RunView, side: RunView, folder: Path) -> Figure:
    """One configuration in two precisions (a grid run and its side run), over the epochs both have: validation
    curves (top) and the grid run's relative difference to the side run, with the ``PRECISION_TOLERANCE`` band
    (bottom)."""
    metric = member.metric
    differences = relative_differences(member, side)
    last = max((epoch for epoch, _ in differences), default=min(member.epochs[-1], side.epochs[-1]))
    fig, (top, bottom) = _new_figure(2, height_per_row=1.7)
    for run, color, marker in ((member, "C0", "o"), (side, "C3", "s")):
        shown = [(e, v) for e, v in zip(run.epochs, _scaled(run.series(f"val_{metric}"), metric), strict=True)
                 if e <= last]
        top.plot([e for e, _ in shown], [v for _, v in shown], VALID, color=color, marker=marker,
                 label=f"{run.key}: {precision(run)}")
    epochs = list(range(1, last + 1))
    _epoch_axis(top, epochs)
    _y_axis(top, f"validation {metric_title(metric)}", log=metric == "perplexity")
    top.set_title(f"{member.id}: {precision(member)} against {precision(side)}", loc="left")
    top.legend(loc="best")
    bottom.axhspan(-100 * PRECISION_TOLERANCE, 100 * PRECISION_TOLERANCE, color="0.88", zorder=0,
                   label=f"±{PRECISION_TOLERANCE:.0%}")
    bottom.axhline(0, color="0.4", linewidth=0.6)
    bottom.plot([e for e, _ in differences], [100 * d for _, d in differences], "-", color="C0", marker="o")
    for epoch, difference in differences:
        bottom.annotate(f"{100 * difference:+.1f}%", (epoch, 100 * difference), textcoords="offset points",
                        xytext=(0, 5 if difference >= 0 else -10), ha="center", fontsize=6.5)
    largest = max([abs(100 * d) for _, d in differences] + [100 * PRECISION_TOLERANCE])
    bottom.set_ylim(-1.4 * largest, 1.4 * largest)
    _epoch_axis(bottom, epochs)
    bottom.set_ylabel(f"{precision(member)} / {precision(side)} − 1 (%)")
    bottom.legend(loc="lower right")
    caption = (f"{member.id} in {precision(member)} ({member.key}, {member.status_text}) and in {precision(side)} "
               f"({side.key}, {side.status_text}): validation {metric} over the {len(differences)} epochs both have"
               f"{' (log scale)' if metric == 'perplexity' else ''} (top), and its relative difference in % with the "
               f"±{PRECISION_TOLERANCE:.0%} band (bottom). Devices: {member.device} and {side.device}")
    return _finish(fig, folder, f"{side.key}-precision", caption, [member, side])
