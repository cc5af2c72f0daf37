"""The report's tables: one ``Table`` model, rendered as Markdown and as LaTeX (booktabs).

Builders: ``results_table`` (Problem 3 Q2 for the ViT grid, the same for the LSTM grid), ``runs_table`` (status
and provenance of every run), ``overfitting_table``, ``memory_table`` (Q7) and ``cnn_table`` (Q6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replab.models import MODELS
from replab.report.formatting import fmt_count, fmt_metric, fmt_mib, fmt_seconds, is_number
from replab.report.reference import CNN_REFERENCE, GRID_TITLES
from replab.report.runs import OPTIMIZER_STATE_COPIES, RunView
from replab.report.study import Study, completed

LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--", "≤": r"$\leq$", "×": r"$\times$",
    "±": r"$\pm$", "…": r"\ldots{}", "\n": " ",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_REPLACEMENTS.get(c, c) for c in str(text))


@dataclass
class Table:
    """A captioned table; ``bold`` holds the (row, column) cells to set in bold; ``number`` is set by the report."""

    key: str  # file name in tables/ and LaTeX label
    title: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    number: int | None = None

    @property
    def label(self) -> str:
        return f"Table {self.number}" if self.number else "Table"

    def cell(self, row: int, column: int, strong: str = "**{}**") -> str:
        text = self.rows[row][column]
        return strong.format(text) if (row, column) in self.bold else text

    def markdown(self) -> str:
        """A pipe table; text columns left-aligned, numeric ones right-aligned."""
        escape = lambda text: str(text).replace("|", r"\|")
        lines = ["| " + " | ".join(escape(c) for c in self.columns) + " |",
                 "|" + "|".join(":---" if a == "l" else "---:" for a in self.alignment()) + "|"]
        for i in range(len(self.rows)):
            lines.append("| " + " | ".join(escape(self.cell(i, j)) for j in range(len(self.columns))) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        """A booktabs ``table`` environment with caption and label (needs ``\\usepackage{booktabs}``)."""
        body = [" & ".join(latex_escape(c) for c in self.columns) + r" \\"]
        for i, row in enumerate(self.rows):
            cells = [latex_escape(row[j]) for j in range(len(row))]
            cells = [rf"\textbf{{{c}}}" if (i, j) in self.bold else c for j, c in enumerate(cells)]
            body.append(" & ".join(cells) + r" \\")
        return "\n".join([
            r"\begin{table}[t]", r"\centering", r"\small",
            rf"\caption{{{latex_escape(self.caption)}}}", rf"\label{{tab:{self.key}}}",
            rf"\begin{{tabular}}{{{''.join(self.alignment())}}}", r"\toprule", body[0], r"\midrule", *body[1:],
            r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
        ])

    def alignment(self) -> list[str]:
        """``r`` for a column whose cells all look numeric (or are empty), else ``l``."""
        def numeric(text: str) -> bool:
            text = str(text).split(" (")[0].replace(",", "").replace("%", "").strip()
            try:
                float(text)
            except ValueError:
                return text in ("—", "")
            return True
        return ["r" if all(numeric(r[j]) for r in self.rows) and self.rows else "l" for j in range(len(self.columns))]


# ------------------------------------------------------------------------------------------------ builders
def best_first(runs: list[RunView]) -> list[RunView]:
    """Runs from the best validation score to the worst, in the first run's direction (ties keep their order)."""
    return sorted(runs, key=lambda r: r.best_val, reverse=bool(runs) and runs[0].higher_is_better)


def _best_of(runs: list[RunView]) -> RunView | None:
    ranked = best_first(completed(runs))
    return ranked[0] if ranked else None


def results_table(study: Study, grid: str) -> Table:
    """Problem 3 Q2 (and its LSTM counterpart): one row per configuration, missing ones included."""
    runs = study.grid_with_missing(grid)
    metric = MODELS[grid].task.metric
    short = "acc. (%)" if metric == "accuracy" else "PPL"
    columns = ["No.", "Architecture", "Layers", "Optimizer", f"Train {short}", "Train loss",
               f"Best val. {short} (epoch)", f"Test {short}", "s/epoch (fastest)", "Parameters", "Status"]
    rows = []
    for run in runs:
        best, epoch = run.best
        rows.append([
            str(run.number), run.architecture, str(run.layers), run.optimizer_name,
            _plain(run.final(f"train_{metric}"), metric), _plain(run.final("train_loss"), "loss"),
            f"{_plain(best, metric)} ({epoch})" if best is not None else "—", _plain(run.test(), metric),
            (f"{run.median_epoch_seconds:.1f} ({run.fastest_epoch_seconds:.1f})" if run.median_epoch_seconds
             is not None else "—"),
            fmt_count(run.parameters), run.status_text,
        ])
    bold_column = columns.index(f"Best val. {short} (epoch)")
    if grid == "lstm":
        best_runs = [_best_of(runs)]
        bold_rule = "the best validation perplexity overall (the LSTM grid has one architecture)"
    else:
        best_runs = [_best_of([r for r in runs if r.architecture == a]) for a in dict.fromkeys(r.architecture
                                                                                              for r in runs)]
        bold_rule = "the best validation accuracy of each architecture"
    bold = {(runs.index(r), bold_column) for r in best_runs if r is not None}
    direction = "higher is better" if metric == "accuracy" else "lower is better"
    # Two sentences; the specification asks that every shorthand of the table be explained in its caption.
    caption = (
        f"{GRID_TITLES[grid]}: training and validation results of each configuration ({direction}), sorted by "
        f"architecture, then layers, then optimizer; in bold, {bold_rule} among completed runs. "
        f"No.: experiment number of the specification's runner script; Layers: "
        f"{'LSTM' if grid == 'lstm' else 'transformer'} layers; "
        + ("Architecture: PreNorm or PostNorm attention block; " if grid == "vit" else "")
        + "SGD+momentum: SGD with momentum 0.9; "
        f"Train {short}, Train loss: the last epoch's, averaged over its "
        f"{'augmented batches' if metric == 'accuracy' else 'batches'}; Best val. {short} (epoch): the best "
        f"validation {metric} and its epoch; Test {short}: test {metric} of that checkpoint; s/epoch (fastest): "
        "median training seconds per epoch (of the fastest epoch); —: no value."
    )
    return Table(f"{grid}-results", f"{GRID_TITLES[grid]}: results", caption, columns, rows, bold)


def _plain(value: float | None, metric: str) -> str:
    """A score for a table cell (percent without the sign: the column header carries the unit)."""
    if metric == "loss":
        return f"{value:.3f}" if is_number(value) else "—"
    return fmt_metric(value, metric).rstrip("%")


def runs_table(study: Study) -> Table:
    """Status and provenance of every run: nothing is silently dropped."""
    rows = []
    for run in sorted(study.runs, key=lambda r: (r.task, r.sort_key())):
        reason = f": {run.reason}" if run.reason and run.status != "completed" else ""
        rows.append([run.key, run.status_text + reason, run.device, run.settings.get("amp", "none"), run.commit,
                     "; ".join(run.limits) or "none", "NO: " + "; ".join(run.differences)
                     if run.differences else "yes", fmt_seconds(run.total_seconds)])
    caption = ("Every run folder found: its status, the device and code it ran on, its batch limits, and whether it "
               "used its full setting (the Legend defines each). Time: wall-clock time of its epochs, training and "
               "validation, its processes added up.")
    return Table("runs", "Runs and provenance", caption,
                 ["Run", "Status", "Device", "amp", "Commit", "Limits", "Full setting", "Time"], rows)


def overfitting_table(study: Study) -> Table:
    """Problem 3 Q8: the train-validation gap at the end and how long ago validation peaked."""
    rows = []
    for run in [r for grid in GRID_TITLES for r in study.grid(grid) if r.epochs_completed]:
        metric = run.metric
        rows.append([
            run.key, run.status_text, _plain(run.final(f"train_{metric}"), metric),
            _plain(run.final(f"val_{metric}"), metric),
            run.gap_text.split(" (")[0],
            f"{run.loss_gap:+.3f}" if is_number(run.loss_gap) else "—",
            f"{run.best_epoch} / {run.epochs[-1]}" if run.best_epoch else "—",
            str(run.epochs_since_peak) if run.epochs_since_peak is not None else "—",
            _plain(run.test("test_best"), metric), _plain(run.test("test_final"), metric),
        ])
    caption = ("Overfitting: the last epoch's training and validation scores (accuracy in %; LSTM: perplexity), their "
               "gap, and how long each run went on after its best validation score. Gap: train minus validation "
               "accuracy (LSTM: validation minus training loss, in nats), positive when the model does better on its "
               "training data; Loss gap: validation minus training loss; Peak / last: epoch of the best validation "
               "score and last epoch; Since peak: epochs trained after it; Test (best), Test (last): test score of "
               "the best-validation checkpoint and of the last epoch.")
    columns = ["Run", "Status", "Train", "Val", "Gap", "Loss gap", "Peak / last", "Since peak", "Test (best)",
               "Test (last)"]
    return Table("overfitting", "Overfitting", caption, columns, rows)


def memory_table(study: Study) -> Table:
    """Problem 3 Q7: steady-state and peak memory per configuration, largest first within a grid."""
    rows = []
    for grid in GRID_TITLES:
        runs = sorted(study.grid(grid), key=lambda r: -(r.memory.get("steady_mean_mb") or -1))
        for run in runs:
            memory = run.memory
            rows.append([
                run.key, run.configuration, fmt_count(run.learnable),
                str(OPTIMIZER_STATE_COPIES.get(run.optimizer, "?")), fmt_mib(run.static_memory_mib),
                fmt_mib(memory.get("steady_mean_mb")), fmt_mib(memory.get("peak_mb")),
                str(memory.get("source") or "—"), run.device,
            ])
    caption = ("Memory of each configuration in MiB, largest steady-state mean first within each grid. Learnable: "
               "learnable parameters; Opt. copies: extra copies of them the optimizer keeps (Adam, AdamW: 2 moments; "
               "SGD+momentum: 1 velocity; SGD: 0); Static: weights, gradients and optimizer state in float32, 4 B × "
               "learnable × (2 + copies); Steady mean: mean of the samples taken every 0.2 s after the warm-up "
               "batches, over the epochs; Peak: largest sample; Source: rss, nvml or torch_reserved (see the Legend).")
    columns = ["Run", "Configuration", "Learnable", "Opt. copies", "Static", "Steady mean", "Peak", "Source",
               "Device"]
    return Table("memory", "Memory", caption, columns, rows)


def best_vit(study: Study) -> RunView | None:
    return _best_of(study.grid("vit"))


def _run_cell(run: RunView) -> str:
    """``cnn-resnet: completed, 10 epochs`` or ``cnn-resnet: interrupted (3/10 epochs)``."""
    if run.status == "completed":
        return f"{run.key}: completed, {run.epochs_completed} epoch{'s' if run.epochs_completed != 1 else ''}"
    return f"{run.key}: {run.status_text}"


def _epochs_text(runs: list[RunView]) -> str:
    """``10 epochs`` (or ``2-10 epochs``) of the completed runs; empty when none completed."""
    epochs = sorted({r.epochs_completed for r in runs if r.status == "completed"})
    if not epochs:
        return ""
    return f"{epochs[0]}{'-' + str(epochs[-1]) if len(epochs) > 1 else ''} epoch{'s' if epochs[-1] != 1 else ''}"


def cnn_table(study: Study) -> Table:
    """Problem 3 Q6: each CNN's reference numbers beside our run of it (one row per run), then our best ViT.

    Test accuracies come first, side by side: the same 10,000 test images on both sides, where the validation
    accuracies come from different 5,000-image splits of the training images.
    """
    rows, cnn_runs = [], study.grid("cnn")
    for name, (label, val, test, params) in CNN_REFERENCE.items():
        runs = [r for r in cnn_runs if r.variant == name]
        for run in runs:
            rows.append([label, fmt_count(params), f"{test:.2f}", _plain(run.test(), "accuracy"), f"{val:.2f}",
                         _plain(run.best_val, "accuracy"), _run_cell(run)])
        if not runs:
            rows.append([label, fmt_count(params), f"{test:.2f}", "—", f"{val:.2f}", "—", "not run"])
    vit = best_vit(study)
    if vit is not None:
        rows.append([f"ViT {vit.architecture}, {vit.layers} layers, {vit.optimizer_name}", fmt_count(vit.parameters),
                     "—", _plain(vit.test(), "accuracy"), "—", _plain(vit.best_val, "accuracy"),
                     f"best ViT, {_run_cell(vit)}"])
    note = "" if cnn_runs else (" No CNN run of our own was found (`replab grid cnn` or "
                                "`replab reproduce --with-cnn` trains them).")
    ours = _epochs_text(cnn_runs)
    caption = ("CIFAR-10: the specification's reference CNNs (180 epochs of the reference training that produced "
               f"them), our own runs of the same networks{f' ({ours})' if ours else ''} and our best ViT, compared on "
               "test accuracy, the same 10,000 test images on both sides. Ref.: the specification's numbers, not "
               "measured here (its validation accuracy is on the reference training's own 5,000 validation images); "
               "Our test: the best-validation checkpoint's test accuracy; Our val.: best validation accuracy on our "
               "5,000 validation images." + note)
    return Table("cnn-comparison", "Comparison with CNNs", caption,
                 ["Model", "Parameters", "Ref. test acc. (%)", "Our test acc. (%)", "Ref. val. acc. (%)",
                  "Our val. acc. (%)", "Our run"], rows)


def _processes_text(run: RunView) -> str:
    """The processes that trained a run, e.g. ``from epoch 1: 9eccbed; from epoch 7: 14578f9`` (with the device where
    a process ran on another one, and the step where it resumed inside an epoch)."""
    attempts = run.record.config.get("attempts")
    if not attempts:
        return f"{run.commit} (processes not recorded)"
    devices = {a.get("device_name") for a in attempts}
    parts = []
    for attempt in attempts:
        epoch, step = attempt.get("from_epoch") or 1, attempt.get("from_step")
        where = f"from epoch {epoch}" + (f", step {step}" if step else "")
        commit = (attempt.get("git_commit") or "unknown")[:7]
        device = f", {attempt.get('device')} ({attempt.get('device_name')})" if len(devices) > 1 else ""
        parts.append(f"{where}: {commit}{device}")
    return "; ".join(parts)


def epochs_table(study: Study) -> Table:
    """Every epoch's training seconds and the processes that trained each run: what the run files record of how a
    run went (restarts, commits, devices), beside the epochs a busy machine slowed."""
    rows = [[run.key, _processes_text(run), " ".join(f"{s:,.0f}" for s in run.epoch_seconds)]
            for grid in GRID_TITLES for run in study.grid(grid) + study.side_runs(grid) if run.epochs_completed]
    caption = ("Training seconds of every epoch in order, and the processes that trained each run: one per start or "
               "resume, with the epoch (and step) it began at and the commit of its code. An epoch well above its "
               "run's fastest shared the machine with other work or was paused; its numbers are unaffected.")
    return Table("epochs", "Epoch times and processes", caption, ["Run", "Processes", "Training s per epoch"], rows)
