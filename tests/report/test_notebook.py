"""replab.report.notebook: a report folder shown in a notebook (the Colab notebook's last cell).

A small report folder in the layout ``replab report`` writes; the Colab notebook's execution test shows a real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("IPython")

from replab.report.notebook import headline, overlay_figures, show_report, tables  # noqa: E402

REPORT_MD = """# Reproduction report

A headline: vit-6 is the best ViT, 66.48 % test accuracy.

## Runs and provenance

**Table 1.** Every run.

| Run | Status |
|:---|:---|
| vit-1 | completed |

## ViT

![Figure 2](figures/vit-1-curves.png)

**Figure 2.** vit-1's curves. ([PDF](figures/vit-1-curves.pdf))

![Figure 3](figures/vit-overlay.png)

**Figure 3.** ViT on CIFAR-10: every configuration. ([PDF](figures/vit-overlay.pdf))

![Figure 1](figures/lstm-overlay.png)
"""


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), "white").save(path)


@pytest.fixture
def report(tmp_path) -> Path:
    (tmp_path / "report.md").write_text(REPORT_MD)
    (tmp_path / "report.html").write_text("<html></html>")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "vit-results.md").write_text("**Table 3.** ViT.\n\n| No. |\n|---:|\n| 1 |\n")
    (tmp_path / "tables" / "runs.md").write_text("**Table 1.** Every run.\n\n| Run |\n|:---|\n| vit-1 |\n")
    (tmp_path / "tables" / "memory.md").write_text("**Table 12.** Memory.\n\n| Run |\n|:---|\n| vit-1 |\n")
    (tmp_path / "tables" / "runs.tex").write_text("\\begin{table}")  # LaTeX twins are not shown
    for name in ("vit-1-curves", "vit-overlay", "lstm-overlay"):
        _png(tmp_path / "figures" / f"{name}.png")
    return tmp_path


def test_headline_is_the_opening_before_the_first_table_without_trailing_headings():
    assert headline(REPORT_MD) == "# Reproduction report\n\nA headline: vit-6 is the best ViT, 66.48 % test accuracy."
    assert headline("# Title\n\n## Section\n\n| a |") == "# Title"


def test_tables_follow_the_reports_numbering(report):
    shown = tables(report)
    assert [text.split(".**")[0] for text in shown] == ["**Table 1", "**Table 3", "**Table 12"]


def test_overlay_figures_in_report_order_with_captions_without_pdf_links(report):
    figures = overlay_figures(report)
    assert [png.name for png, _ in figures] == ["vit-overlay.png", "lstm-overlay.png"]
    assert figures[0][1] == "**Figure 3.** ViT on CIFAR-10: every configuration."
    assert figures[1][1] == ""  # no caption paragraph below it


def test_show_report_displays_headline_tables_figures_and_the_html_link(report):
    from IPython.display import Image, Markdown

    shown = []
    show_report(report, display=shown.append)
    kinds = [type(item) for item in shown]
    assert kinds == [Markdown, Markdown, Markdown, Markdown, Image, Markdown, Image, Markdown]
    assert shown[0].data.startswith("# Reproduction report")
    assert shown[4].width == 720 and shown[4].data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report.html" in shown[-1].data and "](" in shown[-1].data


def test_show_report_without_a_report_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="replab report"):
        show_report(tmp_path, display=lambda item: None)
