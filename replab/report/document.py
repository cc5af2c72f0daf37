"""The report: figures, tables and findings assembled into ``report.md`` and a self-contained ``report.html``.

``write_report(run_folders, out)`` reads the runs, draws ``out/figures/*.{png,pdf}``, writes
``out/tables/*.{md,tex}``, numbers every figure and table in reading order, and writes both documents. The HTML
embeds every image as a base64 PNG data URI and loads nothing else, so it opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import replab
from replab.report.figures import Figure, grid_overlay, memory_bars, run_curves
from replab.report.findings import Finding, findings
from replab.report.runs import GRID_TITLES, Study, load_study
from replab.report.tables import Table, cnn_table, memory_table, overfitting_table, results_table, runs_table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str] = field(default_factory=list)


Block = Heading | Paragraph | Bullets | Figure | Table


@dataclass
class Report:
    """What was written: the folder, the study it came from, and its numbered blocks."""

    out: Path
    study: Study
    findings: list[Finding]
    blocks: list[Block]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]


# ------------------------------------------------------------------------------------------------ assembly
def _grid_section(study: Study, grid: str, folder: Path) -> list[Block]:
    """The results table (LSTM, ViT), the overlay and every run's learning curves of one grid."""
    runs = study.grid(grid)
    if not runs:
        missing = study.missing(grid)
        return [Paragraph(f"No {GRID_TITLES[grid]} run was found"
                          + (f" (missing: {', '.join(missing)})." if missing else "."))]
    blocks: list[Block] = [results_table(study, grid)] if grid != "cnn" else []
    overlay = grid_overlay(study, grid, folder)
    blocks += [overlay] if overlay else []
    blocks += [run_curves(run, folder) for run in runs if run.epochs_completed]
    not_started = [r.key for r in runs if not r.epochs_completed]
    if not_started:
        blocks.append(Paragraph(f"Started but without a completed epoch (no curves): {', '.join(not_started)}."))
    return blocks


def _samples_section(study: Study) -> list[Block]:
    """A labelled text sample from each LSTM run's best checkpoint (see ``replab.report.samples``)."""
    runs = [run for run in study.grid("lstm") if not run.missing]
    if not runs:
        return []
    from replab.report.samples import samples_text

    intro, items = samples_text(runs)
    return [Heading("What the LSTMs write (samples)", 3), Paragraph(intro), Bullets(items)]


def _findings_section(found: list[Finding]) -> list[Block]:
    blocks: list[Block] = [Heading("Findings"), Paragraph(
        "Computed from the runs below; a statement is written only where the runs it needs exist. Accuracy is "
        "in %, differences in percentage points (pp); one seed per configuration, so the sampling noise quoted "
        "for accuracies is a lower bound on the true run-to-run spread.")]
    by_topic: dict[str, list[str]] = {}
    for finding in found:
        by_topic.setdefault(finding.topic, []).append(finding.text)
    for topic, texts in by_topic.items():
        blocks += [Heading(topic, 3), Bullets(texts)]
    return blocks


def assemble(study: Study, found: list[Finding], figures: Path) -> list[Block]:
    """Every block of the report, in reading order (figures are drawn into ``figures`` on the way)."""
    roots = ", ".join(str(r) for r in study.roots)
    blocks: list[Block] = [
        Heading("Reproduction report", 1),
        Paragraph(f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by replab {replab.__version__} from "
                  f"{len(study.runs)} run folder(s) under {roots}."),
        Heading("Runs and provenance"), runs_table(study),
    ]
    missing = {grid: study.missing(grid) for grid in ("lstm", "vit", "cnn")}
    if any(missing.values()):
        blocks.append(Bullets([f"{GRID_TITLES[g]}: missing from the grid (never run): {', '.join(ids)}"
                               for g, ids in missing.items() if ids]))
    blocks += _findings_section(found)
    blocks += [Heading("Problem 1: LSTM language model on Wikitext-2"), Paragraph(
        "Perplexity is the exponential of the mean per-token negative log-likelihood (lower is better); the loss "
        "is that mean NLL in nats. Questions 3 and 4: learning curves of every configuration, and the choice for "
        "wall-clock time and for generalization (Findings).")]
    blocks += _grid_section(study, "lstm", figures)
    blocks += _samples_section(study)
    blocks += [Heading("Problem 3: Vision Transformers on CIFAR-10"), Paragraph(
        "Accuracy on the 45,000 training, 5,000 validation and 10,000 test images (higher is better). Question 1: "
        "learning curves over epochs and wall-clock time; question 2: the table of results.")]
    blocks += _grid_section(study, "vit", figures)
    blocks += [Heading("Comparison with CNNs (Problem 3 Q6)"), cnn_table(study)]
    if study.grid("cnn"):
        blocks += [Paragraph("Learning curves of the CNN baselines trained by this project.")]
        blocks += _grid_section(study, "cnn", figures)
    blocks += [Heading("Overfitting (Problem 3 Q8)"), overfitting_table(study)]
    blocks += [Heading("Memory (Problem 3 Q7)"), memory_table(study)]
    blocks += [f for grid in ("lstm", "vit", "cnn") if (f := memory_bars(study, grid, figures))]
    return blocks


def number(blocks: list[Block]) -> None:
    """Number figures and tables separately, in reading order."""
    for kind in (Figure, Table):
        for index, block in enumerate((b for b in blocks if isinstance(b, kind)), start=1):
            block.number = index


# ------------------------------------------------------------------------------------------------ Markdown
def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(f"**{block.label}.** {block.caption}\n\n{block.markdown()}")
        elif isinstance(block, Figure):
            parts.append(f"![{block.label}](figures/{block.png.name})\n\n**{block.label}.** {block.caption} "
                         f"([PDF](figures/{block.pdf.name}))")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ HTML
STYLE = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
h1, h2, h3 { font-family: Helvetica, Arial, sans-serif; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1.5em 0; }
figure img { width: 540px; max-width: 100%; height: auto; display: block; }
figcaption, .caption { font-size: .9em; max-width: 48em; }
.table { overflow-x: auto; margin: 1.5em 0; }
table { border-collapse: collapse; font-size: .85em; border-top: 2px solid #222; border-bottom: 2px solid #222; }
th { border-bottom: 1px solid #222; text-align: left; }
th, td { padding: .2em .6em; vertical-align: top; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-size: .9em; }
"""


def _inline(text: str) -> str:
    """Escape text for HTML, then render `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(table: Table) -> str:
    align = table.alignment()
    head = "".join(f"<th>{_inline(c)}</th>" for c in table.columns)
    rows = []
    for i in range(len(table.rows)):
        cells = [_inline(text) for text in table.rows[i]]
        cells = [f"<strong>{c}</strong>" if (i, j) in table.bold else c for j, c in enumerate(cells)]
        rows.append("<tr>" + "".join(f'<td class="{a}">{c}</td>' for a, c in zip(align, cells, strict=True))
                    + "</tr>")
    return (f'<div class="table" id="{table.key}"><p class="caption"><strong>{table.label}.</strong> '
            f"{_inline(table.caption)}</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table></div>")


def _html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    return (f'<figure id="{figure.stem}"><img src="data:image/png;base64,{data}" alt="{figure.label}">'
            f"<figcaption><strong>{figure.label}.</strong> {_inline(figure.caption)}</figcaption></figure>")


def render_html(blocks: list[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "Report")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Figure):
            body.append(_html_figure(block))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------ files
def _clear(folder: Path, patterns: Iterable[str]) -> None:
    """Remove what a previous report wrote there (only the report's own kinds of files)."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink()


def write_report(run_folders: Iterable[str | Path], out: str | Path) -> Report:
    """Read every run under ``run_folders`` and write the report into ``out``."""
    out = Path(out)
    study = load_study(run_folders)
    figures, tables = out / "figures", out / "tables"
    for folder, patterns in ((figures, ("*.png", "*.pdf")), (tables, ("*.md", "*.tex"))):
        folder.mkdir(parents=True, exist_ok=True)
        _clear(folder, patterns)
    found = findings(study)
    blocks = assemble(study, found, figures)
    number(blocks)
    for table in (b for b in blocks if isinstance(b, Table)):
        (tables / f"{table.key}.md").write_text(f"**{table.label}.** {table.caption}\n\n{table.markdown()}\n")
        (tables / f"{table.key}.tex").write_text(table.latex())
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks))
    return Report(out, study, found, blocks)
