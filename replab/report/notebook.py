"""A report shown inside a notebook (Jupyter, Colab): ``show_report(REPORT_DIR)``.

It reads a folder written by ``replab report`` (nothing is computed again) and displays, in order: the headline
(``report.md`` up to its first table or figure), every table of ``tables/*.md`` with its caption, in the report's
numbering, the overlay figures (``figures/*-overlay.png``: every configuration of a grid on one figure) with their
captions, and a link to the self-contained ``report.html``. IPython is imported only when it is called.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

FIGURE_WIDTH = 720  # pixels: the PNGs are 3.5 in at 300 dpi (1,050 px), too wide for a notebook's column
_PDF_LINK = re.compile(r"\s*\(\[PDF\]\([^)]*\)\)")  # a caption's "([PDF](figures/x.pdf))": no use in a notebook
_TABLE_NUMBER = re.compile(r"\*\*Table (\d+)\.\*\*")


def headline(markdown: str) -> str:
    """The opening of ``report.md``: its lines before the first table, table caption or figure, without the
    section headings that only announce what follows."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith(("|", "**Table", "![", "**Figure")):
            break
        lines.append(line)
    while lines and (not lines[-1].strip() or lines[-1].startswith("#") and len(lines) > 1):
        lines.pop()
    return "\n".join(lines).strip()


def tables(report_dir: str | os.PathLike) -> list[str]:
    """The Markdown of every ``tables/*.md`` (caption and table), in the report's numbering (then by name)."""
    texts = {path: path.read_text(encoding="utf-8") for path in Path(report_dir, "tables").glob("*.md")}

    def number(path: Path) -> tuple[int, str]:
        found = _TABLE_NUMBER.search(texts[path])
        return (int(found.group(1)) if found else 10**6, path.name)

    return [texts[path].strip() for path in sorted(texts, key=number)]


def overlay_figures(report_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """``(png, caption)`` of every overlay figure, in the order of ``report.md`` (caption: the ``**Figure N.**``
    paragraph below the image there; empty where there is none)."""
    report_dir = Path(report_dir)
    pngs = sorted(report_dir.glob("figures/*-overlay.png"))
    markdown = (report_dir / "report.md").read_text(encoding="utf-8").splitlines()
    found = []
    for png in pngs:
        reference = f"](figures/{png.name})"
        at = next((i for i, line in enumerate(markdown) if reference in line), None)
        caption = ""
        if at is not None:
            after = [line for line in markdown[at + 1:at + 4] if line.strip()]
            if after and after[0].startswith("**Figure"):
                caption = _PDF_LINK.sub("", after[0])
        found.append((png, caption, at if at is not None else len(markdown)))
    return [(png, caption) for png, caption, _ in sorted(found, key=lambda item: item[2])]


def show_report(report_dir: str | os.PathLike, display: Callable | None = None) -> None:
    """Display the report of ``report_dir`` in the running notebook: headline, tables, overlay figures, link.

    ``display``: IPython's ``display`` by default (another callable receives the same objects, for tests).
    Raises ``FileNotFoundError`` naming the command that writes the folder if it holds no ``report.md``.
    """
    # IPython: present in a notebook, not a dependency of replab, so imported only when a notebook shows a report
    from IPython.display import Image, Markdown
    from IPython.display import display as ipython_display

    show = display or ipython_display
    report_dir = Path(report_dir)
    report_md = report_dir / "report.md"
    if not report_md.is_file():
        raise FileNotFoundError(f"no report in {report_dir}: write it first with `replab report RUNS_DIR --out "
                                f"{report_dir}`")
    show(Markdown(headline(report_md.read_text(encoding="utf-8"))))
    for table in tables(report_dir):
        show(Markdown(table))
    for png, caption in overlay_figures(report_dir):
        show(Image(filename=str(png), width=FIGURE_WIDTH))
        if caption:
            show(Markdown(caption))
    html = report_dir / "report.html"
    if html.is_file():
        show(Markdown(f"The whole report, figures embedded (opens offline in a browser): [report.html]({_href(html)}) "
                      f"(`{html.resolve()}`)"))


def _href(path: Path) -> str:
    """A link that works in Jupyter: relative to the notebook's working folder where the file lies under it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()
