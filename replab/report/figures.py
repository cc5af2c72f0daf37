"""The report's figures, drawn with matplotlib (Agg) at column width and saved as PNG (300 dpi) and PDF.

Per run: learning curves (LSTM: perplexity and loss over epochs, Problem 1 Q3; ViT and CNN: accuracy over
epochs and over wall-clock time, Problem 3 Q1). Per grid: an overlay of every configuration's validation curve,
and the memory of every configuration (bar chart).
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
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from replab.report.formatting import fmt_metric, is_number, metric_title, scale  # noqa: E402
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


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (20,000 rather than 2e+04) on the ticks matplotlib chooses to label."""

    def __call__(self, x, pos=None):
        return f"{x:,.6g}" if super().__call__(x, pos) else ""


def _y_axis(ax, label: str, log: bool = False) -> None:
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PlainLogFormatter())
        ax.yaxis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(2, 0.5)))


def _train_val(ax, run: RunView, x: list[float], key: str, metric: str) -> None:
    """Training (solid) and validation (dashed) curves of one quantity (``loss`` or the metric)."""
    scale_as = metric if key == metric else "loss"
    marker = "o" if len(x) <= 20 else None
    ax.plot(x, _scaled(run.series(f"train_{key}"), scale_as), TRAIN, marker=marker, color="C0", label="train")
    ax.plot(x, _scaled(run.series(f"val_{key}"), scale_as), VALID, marker=marker, color="C1", label="validation")


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
        _train_val(bottom, run, wall, metric, metric)
        _mark_best(bottom, run, wall, metric)
        _time_axis(bottom, wall, unit)
        _y_axis(bottom, metric_title(metric))
        what = "accuracy over epochs (top) and over wall-clock time, evaluation included (bottom)"
    notes = [best_text, run.status_text]
    notes += ["a cross marks the last finite point before divergence"] if run.status == "diverged" else []
    notes += [run.not_full_text] if not run.full_spec else []
    caption = (f"{run.description}, {run.hyperparameters}: training (solid) and validation (dashed) {what}. "
               + "; ".join(notes) + ".")
    return _save(fig, folder, f"{run.key}-curves", caption)


@styled
def grid_overlay(study: Study, grid: str, folder: Path) -> Figure | None:
    """Validation curves of every configuration of a grid, over epochs and over wall-clock time."""
    runs = [r for r in study.grid(grid) if r.epochs_completed]
    if not runs:
        return None
    metric = runs[0].metric
    fig, (top, bottom) = _new_figure(2, height_per_row=1.8)
    seconds = [s for r in runs for s in r.series("wall_seconds")]
    divisor, unit = time_axis(seconds)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        style = "--" if run.experiment.get("block") == "postnorm" else "-"
        values = _scaled(run.series(f"val_{metric}"), metric)
        wall = [s / divisor for s in run.series("wall_seconds")]
        top.plot(run.epochs, values, style, color=color, marker=MARKERS[index % len(MARKERS)] if len(values) <= 20
                 else None, label=run.short_label + _status_note(run))
        bottom.plot(wall, values, style, color=color)
        _mark_best(top, run, run.epochs, metric, color)
        _mark_best(bottom, run, wall, metric, color)
    log = metric == "perplexity"
    _epoch_axis(top, [e for r in runs for e in r.epochs])
    _time_axis(bottom, [s / divisor for s in seconds], unit)
    for ax in (top, bottom):
        _y_axis(ax, f"validation {metric_title(metric)}", log=log)
    top.set_title(f"{GRID_TITLES[grid]}: every configuration", loc="left")
    cnn = grid == "cnn"  # CNN labels are the network's name; ViT/LSTM labels its number, optimizer and layers
    fig.legend(loc="outside lower center", ncol=2, title="Model" if cnn else "No. optimizer layers")
    missing = study.missing(grid)
    caption = (f"{GRID_TITLES[grid]}: validation {metric} of every configuration over epochs (top) and over "
               f"wall-clock time (bottom){'; log scale, lower is better' if log else '; higher is better'}. "
               + ("Legend: the network" if cnn else "Legend: experiment number, optimizer, number of layers (L)")
               + f"{'; dashed: PostNorm' if grid == 'vit' else ''}; a star marks each run's best validation score"
               f"{', a cross the last point of a diverged run' if any(r.status == 'diverged' for r in runs) else ''}"
               + (f"; not run (missing from the grid): {', '.join(missing)}" if missing else "") + ".")
    return _save(fig, folder, f"{grid}-overlay", caption)


@styled
def memory_bars(study: Study, grid: str, folder: Path) -> Figure | None:
    """Steady-state mean (bar) and peak (tick) memory of every configuration of a grid."""
    runs = [r for r in study.grid(grid) if is_number(r.memory.get("steady_mean_mb"))]
    if not runs:
        return None
    fig, (ax,) = _new_figure(1, height_per_row=0.25 * len(runs) + 0.8)
    positions = list(range(len(runs)))[::-1]
    means = [r.memory["steady_mean_mb"] for r in runs]
    peaks = [r.memory.get("peak_mb") for r in runs]
    bars = ax.barh(positions, means, height=0.6, color="C0", label="steady-state mean")
    (ticks,) = ax.plot([p if is_number(p) else math.nan for p in peaks], positions, "|", color="C3", markersize=9,
                       markeredgewidth=1.5, label="peak")
    for y, mean in zip(positions, means, strict=True):
        ax.text(mean * 0.98, y, f"{mean:,.0f}", ha="right", va="center", fontsize=6.5, color="white")
    ax.set_yticks(positions, [r.short_label + _status_note(r) for r in runs])
    ax.grid(axis="y", visible=False)
    fig.legend(handles=[bars, ticks], loc="outside lower center", ncol=2)
    sources = sorted({str(r.memory.get("source")) for r in runs})
    devices = sorted({r.device for r in runs})
    ax.set_xlabel(f"memory (MiB; {', '.join(sources)})")
    fig.suptitle(f"{GRID_TITLES[grid]}: memory per configuration", fontsize=STYLE["axes.titlesize"])
    caption = (f"{GRID_TITLES[grid]}: memory of each configuration in MiB, the mean of the steady-state samples "
               f"after warm-up (bar, value inside) and the peak (red tick). Measured as {', '.join(sources)} on "
               f"{', '.join(devices)} (rss: resident memory of the training process, with the Python runtime and the "
               "dataset; nvml: the process's device memory as nvidia-smi shows it); labels: "
               + ("the network." if grid == "cnn" else "experiment number, optimizer, number of layers (L)."))
    return _save(fig, folder, f"{grid}-memory", caption)
