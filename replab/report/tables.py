"""The report's tables: one ``Table`` model, rendered as Markdown and as LaTeX (booktabs).

Builders: ``results_table`` (Problem 3 Q2 for the ViT grid, the same for the LSTM grid), ``runs_table`` (status
and provenance of every run), ``overfitting_table``, ``memory_table`` (Q7) and ``cnn_table`` (Q6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from replab.models import MODELS
from replab.report.reference import CNN_REFERENCE, GRID_TITLES
from replab.report.runs import (
    OPTIMIZER_STATE_COPIES,
    RunView,
    Study,
    completed,
    fmt_count,
    fmt_metric,
    fmt_mib,
    fmt_seconds,
    is_number,
)
from replab.tasks import TASKS

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
    metric = TASKS[MODELS[grid].task].metric
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
        bold_rule = "the best validation perplexity overall (the LSTM grid has one architecture) is in bold"
    else:
        best_runs = [_best_of([r for r in runs if r.architecture == a]) for a in dict.fromkeys(r.architecture
                                                                                              for r in runs)]
        bold_rule = "the best validation accuracy of each architecture is in bold"
    bold = {(runs.index(r), bold_column) for r in best_runs if r is not None}
    direction = "higher is better" if metric == "accuracy" else "lower is better"
    caption = (
        f"{GRID_TITLES[grid]}: results per configuration, {direction}. No.: experiment number of the "
        f"specification's runner script; Layers: number of {'LSTM' if grid == 'lstm' else 'transformer'} layers; "
        + ("Architecture: PreNorm or PostNorm attention block; " if grid == "vit" else "")
        + f"Optimizer: SGD+momentum is SGD with momentum 0.9; Train {short} and Train loss: training "
        f"{'accuracy' if metric == 'accuracy' else 'perplexity'} and loss of the last epoch (averaged over the "
        f"epoch's batches{', augmented images' if metric == 'accuracy' else ''}); Best val. {short} (epoch): best "
        f"validation {metric} over the epochs and the epoch it was reached; Test {short}: test {metric} of the "
        f"checkpoint with the best validation {metric}; s/epoch (fastest): median training seconds per epoch, and "
        f"those of the fastest epoch (the one least slowed by other work on the machine); Parameters: "
        f"number of model parameters; Status: completed, or how far an unfinished run got; — : no value. "
        f"Sorted by architecture, then layers, then optimizer (Adam, AdamW, SGD, SGD+momentum); {bold_rule}, "
        "among completed runs."
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
                     "; ".join(run.limits) or "none", "yes" if run.full_spec else "NO: " + "; ".join(
                         run.limits + run.deviations), fmt_seconds(run.total_seconds)])
    caption = ("Every run folder found, with its status and provenance. Status: completed; incomplete (started, "
               "no summary yet: still running, or killed); interrupted, diverged or failed (with the "
               "reason); damaged (a file of the run cannot be read: which one). Device and amp (autocast "
               "precision) as recorded by the trainer; Commit: git commit of the code (-dirty: uncommitted "
               "changes; a run resumed under another commit lists each, in order, and its config.json's attempts "
               "say from which epoch). Limits: batch limits per epoch; Full spec: whether the run "
               "used the specification's settings (no batch limits, no changed hyperparameter); Time: wall-clock time "
               "of its epochs, training and validation (a resumed run: its processes added up).")
    return Table("runs", "Runs and provenance", caption,
                 ["Run", "Status", "Device", "amp", "Commit", "Limits", "Full spec", "Time"], rows)


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
    caption = ("Overfitting at the end of training. Train, Val: training and validation score of the last epoch "
               "(accuracy in %, LSTM: perplexity); Gap: train minus validation accuracy (pp: percentage points), "
               "for the LSTM validation minus training loss in nats (the log of the ratio of the perplexities); "
               "positive: better on the training data; Loss gap: validation minus training loss; Peak / last: "
               "epoch of the best "
               "validation score and last epoch; Since peak: epochs trained after the validation peak; Test "
               "(best), Test (last): test score of the best-validation checkpoint and of the last epoch.")
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
    caption = ("Memory per configuration, largest steady-state mean first within each grid, in MiB. Learnable: "
               "learnable parameters; Opt. copies: extra copies of the learnable parameters the optimizer keeps "
               "(Adam/AdamW: 2 moment estimates, SGD+momentum: 1 velocity, SGD: 0); Static: weights + gradients + "
               "optimizer state in float32 = 4 B × learnable × (2 + copies); Steady mean: mean of the samples "
               "taken every 0.2 s after the warm-up batches, averaged over the epochs; Peak: largest sample. "
               "Source: rss = resident memory of the training process on the CPU (includes the Python runtime, "
               "PyTorch and the dataset), nvml = device memory of the process as nvidia-smi reports it, "
               "torch_reserved = memory reserved by PyTorch's CUDA allocator; Device: where it was measured.")
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


# Why the specification's validation column is not compared with ours (the report's caption, Findings, README).
COURSE_RUNNER_NOTE = (
    "The comparison is on test accuracy: the same 10,000 CIFAR-10 test images on both sides. The specification's "
    "validation accuracies, like any measured with the course's runner (run_exp_vit.py), come from a validation set "
    "drawn from the training images (a second, independent random_split of the 50,000 training images: about 90 % "
    "of its validation images are also training images), so they are inflated and not comparable with our "
    "validation accuracies, measured on a 5,000-image validation set disjoint from our 45,000 training images."
)


def cnn_table(study: Study) -> Table:
    """Problem 3 Q6: each CNN's reference numbers beside our run of it (one row per run), then our best ViT.

    Test accuracies come first, side by side: they are the comparable numbers (``COURSE_RUNNER_NOTE``).
    """
    rows, cnn_runs = [], study.grid("cnn")
    for name, (label, val, test, params) in CNN_REFERENCE.items():
        runs = [r for r in cnn_runs if r.experiment.get(r.spec.variant) == name]
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
    caption = ("CIFAR-10: the CNN baselines, the specification's numbers beside ours, and our best ViT. "
               + COURSE_RUNNER_NOTE + " Spec. test, Spec. val.: the accuracies given in the specification (Problem "
               "3, question 6; 180 epochs of the reference training), not measured here. Our test: test accuracy "
               "of the checkpoint with the best validation accuracy; Our val.: best validation accuracy over the "
               "epochs; from the runs of this report (their epochs in the last column)." + note)
    return Table("cnn-comparison", "Comparison with CNNs", caption,
                 ["Model", "Parameters", "Spec. test acc. (%)", "Our test acc. (%)",
                  "Spec. val. acc. (%), not comparable", "Our val. acc. (%)", "Our run"], rows)
