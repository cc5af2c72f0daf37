"""The written discussion: one hand-written Markdown file that ``replab report`` prints under the questions it
discusses, after the computed tables, figures and findings of each.

The file has one ``## Problem P QN`` heading per question (any words may follow, e.g. ``## Problem 3 Q5: PreNorm
against PostNorm``; the questions are ``reference.QUESTIONS``), an optional ``# title`` above them, and under each
heading paragraphs and ``-`` bullet lists (continuation lines indented), with inline `code`, *emphasis* and
**bold**. Lines may be wrapped anywhere: the report rewraps them. It is found as ``discussion.md`` beside the runs
folder (``results/runs`` -> ``results/discussion.md``), or named with ``replab report --discussion FILE``; the
discussion of one set of runs does not follow a report of others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from replab.report.blocks import Bullets, Paragraph
from replab.report.reference import QUESTIONS, question_name

FILE_NAME = "discussion.md"
_QUESTION = re.compile(r"^## +Problem +(\d+) +Q(\d+)\b")

Section = list[Paragraph | Bullets]


class DiscussionError(ValueError):
    """A discussion file the report cannot place: the message names the file, the line and the fix."""


def find_discussion(roots: Iterable[str | Path]) -> Path | None:
    """``discussion.md`` beside the first runs folder that has one, else None."""
    for root in roots:
        candidate = Path(root).parent / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def read_discussion(path: str | Path) -> dict[tuple[int, int], Section]:
    """The blocks of each question's discussion, by (problem, question)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DiscussionError(f"cannot read the discussion {path}: {error}") from None
    known = {(p, q) for p, q, _ in QUESTIONS}
    sections: dict[tuple[int, int], list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        heading = _QUESTION.match(line)
        if heading:
            key = (int(heading.group(1)), int(heading.group(2)))
            if key not in known:
                names = ", ".join(f"## {question_name(p, q)}" for p, q, _ in QUESTIONS)
                raise DiscussionError(f"{path}:{number}: {line.strip()!r} is not a question the report answers; "
                                      f"the headings are {names}")
            if key in sections:
                raise DiscussionError(f"{path}:{number}: a second heading for {question_name(*key)}: merge the two")
            current = sections[key] = []
        elif line.startswith("#") and not (current is None and line.startswith("# ")):
            raise DiscussionError(f"{path}:{number}: {line.strip()!r}: a discussion has one `## Problem P QN` heading "
                                  "per question and no other headings (a `# title` may open the file)")
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.startswith("# "):
            raise DiscussionError(f"{path}:{number}: text before the first `## Problem P QN` heading: move it under "
                                  "the question it discusses")
    return {key: _blocks(text) for key, text in sections.items()}


def _blocks(lines: list[str]) -> Section:
    """Paragraphs and bullet lists of a section: blank lines end a paragraph or a bullet, a line that goes on
    without one continues it; bullets one after another make one list."""
    blocks: Section = []
    words: list[str] = []  # the paragraph or bullet being read
    is_bullet = False

    def end() -> None:
        if not words:
            return
        text = " ".join(words)
        if not is_bullet:
            blocks.append(Paragraph(text))
        elif blocks and isinstance(blocks[-1], Bullets):
            blocks[-1].items.append(text)
        else:
            blocks.append(Bullets([text]))
        words.clear()

    for line in lines:
        bullet = re.match(r"^[-*] +(.*)", line)
        if bullet or not line.strip():
            end()
        if bullet:
            is_bullet = True
            words.append(bullet.group(1).strip())
        elif line.strip():
            is_bullet = is_bullet and bool(words)  # a line after a blank one starts a paragraph
            words.append(line.strip())
    end()
    return blocks
