"""The report's text blocks (headings, paragraphs, bullet lists, a banner) and the wrapping of prose for ``report.md``.

``report.md`` is read in plain text editors as well as on GitHub, so its prose is wrapped at ``WIDTH`` columns
(tables are not: a Markdown table row is one line). A wrapped line never starts with something Markdown would read
as the start of a block (a list marker, a heading, a quote, a table row), so wrapping never changes what renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WIDTH = 120

# A word that would open a Markdown block at the start of a line: list markers (``-``, ``+``, ``*``, ``1.``,
# ``1)``), headings (``#``), quotes (``>``), table rows (``|``), setext underlines and fences.
_OPENS_A_BLOCK = re.compile(r"^([-+*]|#{1,6}|>.*|\d{1,9}[.)]|\|.*|=+|-{2,}|`{3,}.*|~{3,}.*)$")


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


@dataclass
class Banner:
    """A paragraph set apart at the top of the report (the demo warning): a quote in Markdown, a box in HTML."""

    text: str


def wrap(text: str, first: str = "", later: str = "", width: int = WIDTH) -> str:
    """``text`` as lines of at most ``width`` characters (a longer word stands alone), the first one after
    ``first``, the others after ``later``; no line but the first starts with a word in ``_OPENS_A_BLOCK``."""
    lines: list[list[str]] = [[]]
    for word in text.split():
        line = lines[-1]
        prefix = first if len(lines) == 1 else later
        if not line or len(prefix) + len(" ".join([*line, word])) <= width:
            line.append(word)
        elif _OPENS_A_BLOCK.match(word):  # the words before it start the new line instead, from a safe one
            carried = [word]
            while len(line) > 1 and _OPENS_A_BLOCK.match(carried[0]):
                carried.insert(0, line.pop())
            if _OPENS_A_BLOCK.match(carried[0]):
                line.extend(carried)  # no safe word to start with: a line too long rather than a list or a heading
            else:
                lines.append(carried)
        else:
            lines.append([word])
    return "\n".join((first if i == 0 else later) + " ".join(words) for i, words in enumerate(lines))
