"""The report: figures, tables and findings assembled into ``report.md`` and a self-contained ``report.html``.

``write_report(run_folders, out)`` reads the runs, draws ``out/figures/*.{png,pdf}``, writes
``out/tables/*.{md,tex}``, numbers every figure and table in reading order, and writes both documents. The report
opens with its headline (``findings.headline``) and a legend, then answers the specification's questions in its
order (``reference.QUESTIONS``): under each, the computed tables, figures and findings, then the written discussion
of that question (``replab.report.discussion``). The HTML embeds every image as a base64 PNG data URI and loads
nothing else, so it opens offline in any browser; with ``link_figures`` it points at ``figures/*.png`` instead, as
``report.md`` does (a report kept in git then holds each image once, not twice).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import replab
from replab.report.attention import FORMULA, attention_parameters, attention_share, attention_table, specification_heads
from replab.report.blocks import Banner, Bullets, Heading, Paragraph, wrap
from replab.report.demo import banner, mark_demo, report_title
from replab.report.discussion import FILE_NAME, Section, find_discussion, read_discussion
from replab.report.figures import Figure, grid_overlay, memory_bars, precision_figure, run_curves
from replab.report.findings import Finding, findings, headline
from replab.report.precision import CURVES_QUESTION, precision, precision_pairs
from replab.report.reference import GRID_TITLES, PROBLEM_TITLES, QUESTIONS, question_name
from replab.report.runs import CIFAR_VALID_IMAGES, SAME_COST_MARGIN
from replab.report.samples import samples_text
from replab.report.study import Study, load_study
from replab.report.tables import (
    Table,
    cnn_table,
    epochs_table,
    memory_table,
    overfitting_table,
    results_table,
    runs_table,
)

__all__ = ["Banner", "Block", "Bullets", "Heading", "Paragraph", "Report", "write_report"]

Block = Heading | Paragraph | Bullets | Banner | Figure | Table
TITLE = "Reproduction report"


@dataclass
class Report:
    """What was written: the folder, the study it came from, its numbered blocks and the discussion it included."""

    out: Path
    study: Study
    findings: list[Finding]
    blocks: list[Block]
    discussion: Path | None = None

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]


# ------------------------------------------------------------------------------------------------ assembly
LEGEND = [
    "**Status**: completed; incomplete (started, no summary yet: still running, or killed); interrupted, diverged "
    "or failed (with the reason); damaged (a file of the run cannot be read: which one); missing (not run). An "
    "unfinished run shows the epochs it completed, e.g. (3/10 epochs).",
    "**Full setting**: the run used its configuration's settings, with no batch limits: those of the "
    "specification's runner scripts for the LSTM and the ViT; for the CNN baselines, those of the reference "
    "training that produced the specification's CNN table (180 epochs, learning rate divided by 10 at epochs 100 "
    "and 150), which the specification itself does not give. `NO: ...` names each difference, e.g. `epochs 10 "
    "(reference training 180)`.",
    "**Device**: where a run trained, as the trainer recorded it; `cpu (AMD EPYC, AVX512)` is the CPU's name and "
    "the vector instructions PyTorch's kernels use on it, since two CPUs of one name can differ in speed and in the "
    "last digits of their results. `A, then B`: a run resumed on another device. Times are compared only between "
    "runs on the same device. **amp**: autocast precision (none: float32). **Commit**: the git commit of the code "
    "(`-dirty`: with uncommitted changes; a resumed run lists each commit in order).",
    "**No.**: the experiment number in the specification's runner script; **L**: layers; **SGD+momentum**: SGD "
    "with momentum 0.9.",
    "**Scores**: accuracy in %, differences in percentage points (pp); perplexity is the exponential of the mean "
    "negative log-likelihood per token (lower is better), and the loss that mean, in nats. **Test**: the test "
    "score of the checkpoint with the best validation score. **Sampling noise**: two standard errors of the "
    f"difference of two accuracies on {CIFAR_VALID_IMAGES:,} validation images; with one seed per configuration it "
    "is a lower bound on the run-to-run spread.",
    "**s/epoch**: the median training seconds of a run's epochs, with its fastest epoch (the one least slowed by "
    "other work on the machine) in parentheses. One configuration is called costlier than another only when even "
    f"its fastest epoch took more than {SAME_COST_MARGIN:.0%} longer than the other's median one.",
    "**Memory**: rss is the resident memory of the training process on a CPU (with the Python runtime, PyTorch and "
    "the dataset); nvml the process's GPU memory as nvidia-smi shows it; torch_reserved the memory held by "
    "PyTorch's CUDA allocator.",
    "**Figures**: training solid, validation dashed; a star marks a run's best validation score; training accuracy "
    "is averaged over the epoch's augmented batches. **—**: no value.",
]


def _curves(study: Study, grid: str, folder: Path) -> list[Block]:
    """The overlay and every run's learning curves of one grid, then the comparison of each configuration trained
    in two precisions (a grid run and its side run)."""
    runs = study.grid(grid)
    overlay = grid_overlay(study, grid, folder)
    blocks: list[Block] = [overlay] if overlay else []
    drawn = [run for run in runs if run.epochs_completed]
    if len(drawn) == 1:
        blocks.append(Paragraph(f"One {GRID_TITLES[grid]} run has a completed epoch, {drawn[0].key}: its figure "
                                "below shows it; the overlay of every configuration comes with a second run."))
    blocks += [run_curves(run, folder) for run in drawn]
    not_started = [r.key for r in runs if not r.epochs_completed]
    if not_started:
        blocks.append(Paragraph(f"Started but without a completed epoch (no curves): {', '.join(not_started)}."))
    blocks += [precision_figure(member, side, folder) for member, side in precision_pairs(study, grid)]
    return blocks


def _side_runs(study: Study) -> list[Block]:
    """The side runs, named below the runs table: what each is, and where the report compares it."""
    items = []
    for grid in GRID_TITLES:
        pairs = {side.key: member for member, side in precision_pairs(study, grid)}
        for side in study.side_runs(grid):
            text = f"{side.key}: {side.id}, {precision(side)}, {side.status_text}"
            if side.key in pairs:
                text += (f"; compared with the grid's {pairs[side.key].key} ({precision(pairs[side.key])}) under "
                         f"{question_name(*CURVES_QUESTION[grid])}")
            items.append(text + ".")
    if not items:
        return []
    return [Paragraph("Side runs: a second folder of an experiment the grid holds (the grid's run is the folder named "
                      "after the experiment). They are listed here and compared where said, and left out of the "
                      "grid's tables, overlays and findings."), Bullets(items)]


def _no_run(study: Study, grid: str) -> Paragraph:
    missing = study.missing(grid)
    return Paragraph(f"No {GRID_TITLES[grid]} run was found" + (f" (missing: {', '.join(missing)})." if missing
                                                                 else "."))


def _samples(study: Study, data_dir: str | Path | None) -> list[Block]:
    """A labelled text sample from each LSTM run's best checkpoint (see ``replab.report.samples``), decoded with
    the vocabulary of the data folder ``data_dir``."""
    runs = [run for run in study.grid("lstm") if not run.missing]
    if not runs:
        return []
    intro, items = samples_text(runs, data_dir)
    return [Heading("What the LSTMs write (samples)", 4), Paragraph(intro), Bullets(items)]


def _attention(study: Study) -> list[Block]:
    """Problem 2 Q5: the formula, its terms for the specification's ViT, and the attention's share of each ViT."""
    m, d = specification_heads()
    blocks: list[Block] = [
        Paragraph(f"With m heads of size d, the module projects the queries, keys and values with three (md × md) "
                  f"matrices and biases of md, and the concatenated heads with W_O (md × md) and b_O: {FORMULA} "
                  f"learnable parameters, independent of the sequence length. For the specification's ViT ({m} heads "
                  f"of {d}, md = {m * d}) that is {attention_parameters(m, d):,} per attention block."),
        attention_table(),
    ]
    share = attention_share(study)
    if share:
        blocks += [Paragraph("The attention's share of the ViTs of the runs (one attention per layer):"),
                   Bullets(share)]
    return blocks


# The questions answered by findings alone: the grid and configurations each needs, and what it needs of them.
NEEDS = {
    (1, 4): ("lstm", range(1, 7), "a completed configuration among 1-6"),
    (3, 3): ("vit", range(1, 7), "a completed configuration among 1-6"),
    (3, 4): ("vit", range(1, 5), "two completed configurations among 1-4"),
    (3, 5): ("vit", (6, 7), "configurations 6 and 7 completed"),
}


def _not_yet(study: Study, question: tuple[int, int]) -> Paragraph:
    """The one line of a question that no completed run answers yet, naming the runs it waits for."""
    grid, numbers, need = NEEDS[question]
    waiting = [f"{r.id} {r.status_text}" for r in study.grid(grid) if r.number in numbers and not r.completed]
    missing = [i for i in study.missing(grid) if int(i.rsplit("-", 1)[-1]) in numbers]
    waiting += [f"not run: {', '.join(missing)}"] if missing else []
    return Paragraph(f"Not answerable yet: it needs {need} of the {GRID_TITLES[grid]} grid"
                     + (f" ({'; '.join(waiting)})." if waiting else "."))


def _computed(study: Study, figures: Path, data_dir: str | Path | None) -> dict[tuple[int, int], list[Block]]:
    """The tables and figures of each question, drawn into ``figures`` on the way (in reading order)."""
    lstm, vit, cnn = (bool(study.grid(grid)) for grid in ("lstm", "vit", "cnn"))
    computed: dict[tuple[int, int], list[Block]] = {
        (1, 3): ([results_table(study, "lstm"), *_curves(study, "lstm", figures), *_samples(study, data_dir)]
                 if lstm else [_no_run(study, "lstm")]),
        (1, 4): [],
        (2, 5): _attention(study),
        (3, 1): _curves(study, "vit", figures) if vit else [_no_run(study, "vit")],
        (3, 2): [results_table(study, "vit")] if vit else [_no_run(study, "vit")],
        (3, 6): [cnn_table(study)] + (_curves(study, "cnn", figures) if cnn else []),
        (3, 7): [memory_table(study)] + [f for grid in GRID_TITLES if (f := memory_bars(study, grid, figures))],
        (3, 8): [overfitting_table(study)],
    }
    return computed


def _findings_blocks(found: list[Finding], level: int = 4) -> list[Block]:
    """The findings under a heading per topic."""
    by_topic: dict[str, list[str]] = {}
    for finding in found:
        by_topic.setdefault(finding.topic, []).append(finding.text)
    return [block for topic, texts in by_topic.items() for block in (Heading(topic, level), Bullets(texts))]


def _question(study: Study, problem: int, question: int, computed: list[Block], found: list[Finding],
              discussion: Section | None) -> list[Block]:
    """One question: its tables and figures, its findings, then its written discussion."""
    blocks = [*computed, *_findings_blocks(found)]
    if not blocks:
        blocks = [_not_yet(study, (problem, question))]
    if discussion:
        blocks += [Heading("Discussion", 4), *discussion]
    return blocks


def _generated(study: Study, discussion: Path | None, explicit: bool) -> Paragraph:
    """Where the report comes from and the command that regenerates it (no date and no resolved path: the same
    runs give the same report, byte for byte, and no machine's absolute path gets published)."""
    roots = " ".join(str(r) for r in study.roots)
    command = f"replab report {roots}" + (f" --discussion {discussion}" if explicit and discussion else "")
    text = (f"Generated by replab {replab.__version__} from {len(study.runs)} run folder(s) under "
            f"{', '.join(map(str, study.roots))}")
    if discussion:
        return Paragraph(f"{text} and the written discussion in {discussion} (`{command}` regenerates it).")
    return Paragraph(f"{text} (`{command}` regenerates it). No written discussion was found: write one as "
                     f"{FILE_NAME} beside the runs folder, with one `## Problem P QN` heading per question.")


def assemble(study: Study, found: list[Finding], figures: Path, data_dir: str | Path | None = None,
             discussion: Path | None = None, explicit_discussion: bool = False,
             written: dict | None = None) -> list[Block]:
    """Every block of the report, in reading order (figures are drawn into ``figures`` on the way; ``data_dir``:
    the data folder whose GPT-1 vocabulary decodes the LSTM samples, ``resolve_data_dir``'s default if None;
    ``discussion``: the written discussion file, if any, and ``written`` its texts by question, ``read_discussion``'s
    result)."""
    written = written or {}
    warning = banner(study)
    blocks: list[Block] = [Heading(report_title(study, TITLE), 1), *([Banner(warning)] if warning else []),
                           _generated(study, discussion, explicit_discussion),
                           Heading("Summary"), Bullets([mark_demo(line, study) for line in headline(study)]),
                           Heading("Legend"), Bullets(list(LEGEND)),
                           Heading("Runs and provenance"), runs_table(study), *_side_runs(study)]
    missing = {grid: study.missing(grid) for grid in GRID_TITLES}
    if any(missing.values()):
        blocks.append(Bullets([f"{GRID_TITLES[g]}: missing from the grid (never run): {', '.join(ids)}"
                               for g, ids in missing.items() if ids]))
    blocks += _findings_blocks([f for f in found if f.question is None], level=3)
    computed = _computed(study, figures, data_dir)
    for problem, title in PROBLEM_TITLES.items():
        blocks.append(Heading(f"Problem {problem}: {title}"))
        for p, q, question_title in (entry for entry in QUESTIONS if entry[0] == problem):
            blocks.append(Heading(f"{question_name(p, q)}: {question_title}", 3))
            blocks += _question(study, p, q, computed.get((p, q), []), [f for f in found if f.question == (p, q)],
                                written.get((p, q)))
    blocks += [Heading("Appendix: epoch times and processes"), epochs_table(study)]
    return blocks


def number(blocks: list[Block]) -> None:
    """Number figures and tables separately, in reading order."""
    for kind in (Figure, Table):
        for index, block in enumerate((b for b in blocks if isinstance(b, kind)), start=1):
            block.number = index


# ------------------------------------------------------------------------------------------------ Markdown
def caption_markdown(block: Table | Figure) -> str:
    """``**Table 3.** caption`` (a figure's with its PDF link), wrapped."""
    link = f" ([PDF](figures/{block.pdf.name}))" if isinstance(block, Figure) else ""
    return wrap(f"**{block.label}.** {block.caption}{link}")


def render_markdown(blocks: list[Block]) -> str:
    """``report.md``: prose wrapped at ``blocks.WIDTH`` columns (tables are one row a line)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(wrap(block.text))
        elif isinstance(block, Banner):
            parts.append(wrap(block.text, "> ", "> "))
        elif isinstance(block, Bullets):
            parts.append("\n".join(wrap(item, "- ", "  ") for item in block.items))
        elif isinstance(block, Table):
            parts.append(f"{caption_markdown(block)}\n\n{block.markdown()}")
        elif isinstance(block, Figure):
            parts.append(f"![{block.label}](figures/{block.png.name})\n\n{caption_markdown(block)}")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ HTML
STYLE = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
h1, h2, h3 { font-family: Helvetica, Arial, sans-serif; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.figures { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
figure { margin: 1.5em 0; flex: 0 1 28.5em; min-width: 0; }
figure img { width: 100%; height: auto; display: block; }
figcaption, .caption { font-size: .9em; }
.table { overflow-x: auto; margin: 1.5em 0; }
table { border-collapse: collapse; font-size: .85em; border-top: 2px solid #222; border-bottom: 2px solid #222; }
th { border-bottom: 1px solid #222; text-align: left; }
th, td { padding: .2em .6em; vertical-align: top; white-space: nowrap; }
td.w { white-space: normal; min-width: 16em; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .9em; }
.banner { border: 2px solid #c0392b; background: #fdecea; padding: 0 1em; margin: 1em 0; }
"""
LONG_CELL = 40  # characters: a longer cell may wrap (at spaces); shorter ones (ids, numbers, devices) never do


def _emphasis(text: str) -> str:
    """**bold** and *emphasis* of escaped text."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])", r"<em>\1</em>", text)


def _inline(text: str) -> str:
    """Escape text for HTML, then render `code` spans, **bold** and *emphasis* (not inside code)."""
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(f"<code>{html.escape(p[1:-1])}</code>" if p.startswith("`") and len(p) > 1 else
                   _emphasis(html.escape(p)) for p in parts)


def _html_table(table: Table) -> str:
    align = table.alignment()
    head = "".join(f"<th>{_inline(c)}</th>" for c in table.columns)
    rows = []
    for i in range(len(table.rows)):
        cells = [_inline(text) for text in table.rows[i]]
        cells = [f"<strong>{c}</strong>" if (i, j) in table.bold else c for j, c in enumerate(cells)]
        wraps = [" w" if len(text) > LONG_CELL else "" for text in table.rows[i]]
        rows.append("<tr>" + "".join(f'<td class="{a}{w}">{c}</td>' for a, w, c in zip(align, wraps, cells,
                                                                                         strict=True)) + "</tr>")
    return (f'<div class="table" id="{table.key}"><p class="caption"><strong>{table.label}.</strong> '
            f"{_inline(table.caption)}</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table></div>")


def _html_figure(figure: Figure, link: bool) -> str:
    if link:
        source = f"figures/{figure.png.name}"
    else:
        source = "data:image/png;base64," + base64.b64encode(figure.png.read_bytes()).decode("ascii")
    return (f'<figure id="{figure.stem}"><img src="{source}" alt="{figure.label}">'
            f"<figcaption><strong>{figure.label}.</strong> {_inline(figure.caption)}</figcaption></figure>")


def render_html(blocks: list[Block], link_figures: bool = False) -> str:
    """The page; consecutive figures share a row two by two, so that they use the page's width at the size of
    their text (a one-column figure stretched over the page would set its labels larger than the prose)."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "Report")
    body = []
    for index, block in enumerate(blocks):
        if isinstance(block, Figure) and (index == 0 or not isinstance(blocks[index - 1], Figure)):
            body.append('<div class="figures">')
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Banner):
            body.append(f'<div class="banner"><p>{_inline(block.text)}</p></div>')
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Figure):
            body.append(_html_figure(block, link_figures))
            if index + 1 == len(blocks) or not isinstance(blocks[index + 1], Figure):
                body.append("</div>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------ files
def _clear(folder: Path, patterns: Iterable[str]) -> None:
    """Remove what a previous report wrote there (only the report's own kinds of files)."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink()


def write_report(run_folders: Iterable[str | Path], out: str | Path, link_figures: bool = False,
                 data_dir: str | Path | None = None, discussion: str | Path | None = None) -> Report:
    """Read every run under ``run_folders`` and write the report into ``out`` (``link_figures``: the HTML links
    ``figures/*.png`` rather than embedding them; ``data_dir``: the data folder of the GPT-1 vocabulary that
    decodes the LSTM samples; ``discussion``: the written discussion, by default ``discussion.md`` beside the
    runs folder if there is one). A discussion the report cannot place raises ``DiscussionError`` before anything
    is written."""
    out = Path(out)
    study = load_study(run_folders)
    explicit, default = discussion is not None, find_discussion(study.roots)
    discussion = Path(discussion) if explicit else default
    written = read_discussion(discussion) if discussion is not None else {}  # a bad file fails before any is written
    figures, tables = out / "figures", out / "tables"
    for folder, patterns in ((figures, ("*.png", "*.pdf")), (tables, ("*.md", "*.tex"))):
        folder.mkdir(parents=True, exist_ok=True)
        _clear(folder, patterns)
    found = findings(study)
    blocks = assemble(study, found, figures, data_dir, discussion, explicit and discussion != default, written)
    number(blocks)
    for table in (b for b in blocks if isinstance(b, Table)):
        (tables / f"{table.key}.md").write_text(f"{caption_markdown(table)}\n\n{table.markdown()}\n")
        (tables / f"{table.key}.tex").write_text(table.latex())
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks, link_figures))
    return Report(out, study, found, blocks, discussion)
