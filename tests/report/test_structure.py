"""The report's structure: its headline and legend, one section per question of the specification in order, each
with its tables and figures, then its findings, then the written discussion; captions of at most two sentences;
prose wrapped without changing what Markdown renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replab.cli import main
from replab.report.blocks import WIDTH, wrap
from replab.report.discussion import DiscussionError, read_discussion
from replab.report.document import write_report
from replab.report.reference import QUESTIONS, question_name
from tests.report.fakes import rising, write_run, write_study

NAMES = [question_name(p, q) for p, q, _ in QUESTIONS]


def discussion_text(names=NAMES) -> str:
    """A discussion with a recognisable paragraph, a bullet list and markup under each question."""
    parts = ["# Discussion of planted runs", ""]
    for name in names:
        parts += [f"## {name}: anything", "", f"Written about {name}, *emphasised*, with `code` and",
                  "**bold**, over two lines.", "", f"- first point of {name}", "  going on",
                  f"- second point of {name}", ""]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A planted study with its discussion beside the runs folder, and the report written from them."""
    root = tmp_path_factory.mktemp("study")
    write_study(root / "runs")
    (root / "discussion.md").write_text(discussion_text())
    assert main(["report", str(root / "runs"), "--out", str(root / "report")]) == 0
    return root / "report"


def sections(markdown: str) -> dict[str, str]:
    """Each question's section of report.md, by its name (``Problem 3 Q5``)."""
    found = {}
    for part in re.split(r"\n### (?=Problem )", markdown)[1:]:
        found[part.split(":", 1)[0]] = part.split("\n## ", 1)[0]
    return found


def sentences(text: str) -> int:
    """Sentences of a caption: a full stop, question or exclamation mark before a capital letter or the end
    (the column headers' abbreviations, ``Best val. PPL``, and numbers such as ``0.0003`` do not end one)."""
    text = re.sub(r"\b(val|acc|No|Opt|Ref)\.", r"\1", text.strip())
    return len(re.findall(r"[.!?](?=\s+[A-Z]|\s*$)", text))


def test_questions_come_in_the_specifications_order_each_with_its_discussion(written):
    markdown = (written / "report.md").read_text()
    found = sections(markdown)
    assert list(found) == NAMES
    for name, section in found.items():
        computed, discussion = section.split("\n#### Discussion\n")
        assert f"Written about {name}, *emphasised*, with `code` and **bold**, over two lines." in discussion
        assert f"- first point of {name} going on\n- second point of {name}" in discussion
        assert "Written about" not in computed
    assert "and the written discussion in" in markdown.split("\n## ", 1)[0].replace("\n", " ")


def test_tables_and_figures_come_before_the_findings_that_cite_them(written):
    found = sections((written / "report.md").read_text())
    for name in ("Problem 3 Q6", "Problem 3 Q7", "Problem 3 Q8"):
        section = found[name]
        last_caption = max(m.start() for m in re.finditer(r"^\*\*(Table|Figure) \d+\.\*\*", section, re.MULTILINE))
        first_finding = section.index("\n#### ")
        assert last_caption < first_finding, name
    markdown = (written / "report.md").read_text()  # the choice (Q3) cites the results table (Q2) before it
    assert markdown.index("ViT on CIFAR-10: training and validation results") < markdown.index(
        "For generalization: vit-")


def test_the_report_opens_with_its_headline_and_defines_its_legend_once(written):
    markdown = (written / "report.md").read_text()
    head = markdown.split("\n## Legend\n", 1)[0]
    assert "## Summary" in head and "**Table 1.**" not in head
    head = head.replace("\n  ", " ").replace("\n", " ")
    assert ("ViT on CIFAR-10 (Problem 3): 5 of 7 configurations completed; vit-3 diverged (3/10 epochs); vit-5 "
            "incomplete (2/10 epochs). Best: vit-7 (PostNorm, 6 layers, AdamW), best validation accuracy 72.00% "
            "(epoch 10), test accuracy 71.00%") in head
    assert "LSTM on Wikitext-2 (Problem 1): 5 of 6 configurations completed; not run: lstm-4. Best: lstm-5" in head
    assert "our best ViT (vit-7, 71.00% with 3,195,146 parameters) is 20.07 pp below the best of them" in head
    assert markdown.count("## Legend") == 1 and markdown.count("**Status**:") == 1
    assert "Status: completed; incomplete" not in markdown  # no caption repeats the legend


def test_captions_are_at_most_two_sentences(tmp_path):
    root = tmp_path / "runs"
    write_study(root)
    write_run(root, "cnn-resnet", [0.5, 0.6], [0.5, 0.7], test=0.58, environment={"device_name": "Test, AVX512"})
    write_run(root, "cnn-densenet", [0.5, 0.7], [0.5, 0.7], test=0.68, seconds=[600.0, 1500.0])  # a slow epoch
    report = write_report([root], tmp_path / "report")
    captions = [block.caption for block in report.tables + report.figures]
    assert len(captions) == 8 + 20  # 14 runs' curves, 3 overlays (one with a panel per device), 3 memory charts
    for caption in captions:
        assert 1 <= sentences(caption) <= 2, caption
    assert sentences("Best val. acc. (%) (epoch): lr 0.0003. Two.") == 2


def test_prose_lines_are_at_most_120_columns(written):
    for name in ["report.md", *sorted(p.name for p in (written / "tables").glob("*.md"))]:
        text = (written / name).read_text() if name == "report.md" else (written / "tables" / name).read_text()
        prose = [line for line in text.splitlines() if not line.startswith("|")]
        assert max(map(len, prose)) <= WIDTH, (name, max(prose, key=len))


WORDS = st.one_of(st.sampled_from(["-", "+", "*", "#", "##", ">", ">x", "1.", "12)", "|", "|a", "==", "---", "```",
                                   "~~~", "-0.05", "pp", "(3/10", "×"]),
                  st.text(alphabet="abcdefghij-.,", min_size=1, max_size=30))


@given(st.lists(WORDS, min_size=1, max_size=80), st.integers(min_value=20, max_value=120))
def test_wrapping_keeps_the_words_and_never_opens_a_block(words, width):
    wrapped = wrap(" ".join(words), "- ", "  ", width=width)
    lines = wrapped.split("\n")
    assert " ".join(line[2:] for line in lines).split() == words
    for line in lines[1:]:
        first = line[2:].split()[0]
        assert not re.fullmatch(r"[-+*]|#{1,6}|>.*|\d{1,9}[.)]|\|.*|=+|-{2,}|`{3,}.*|~{3,}.*", first), lines
    for line in lines:  # longer only for an overlong word, or to keep a block opener off the start of a line
        assert len(line) <= width or len(line[2:].split()) == 1 or any(re.fullmatch(
            r"[-+*]|#{1,6}|>.*|\d{1,9}[.)]|\|.*|=+|-{2,}|`{3,}.*|~{3,}.*", w) for w in line.split()[1:]), line


def test_a_question_without_runs_says_so_in_one_line(tmp_path):
    write_run(tmp_path / "runs", "lstm-1", [400.0, 300.0, 250.0], [700.0, 300.0, 200.0], status=None, epochs=10)
    report = write_report([tmp_path / "runs"], tmp_path / "report")
    found = sections((tmp_path / "report" / "report.md").read_text())
    q4 = found["Problem 1 Q4"].split("\n", 1)[1].strip()
    assert q4.replace("\n", " ") == ("Not answerable yet: it needs a completed configuration among 1-6 of the LSTM on "
                                     "Wikitext-2 grid (lstm-1 incomplete (3/10 epochs); not run: lstm-2, lstm-3, "
                                     "lstm-4, lstm-5, lstm-6).")
    for name in ("Problem 3 Q1", "Problem 3 Q2"):
        assert found[name].split("\n", 1)[1].strip().replace("\n", " ") == (
            "No ViT on CIFAR-10 run was found (missing: vit-1, vit-2, vit-3, vit-4, vit-5, vit-6, vit-7).")
    for name, need in (("Problem 3 Q3", "a completed configuration among 1-6"),
                       ("Problem 3 Q4", "two completed configurations among 1-4"),
                       ("Problem 3 Q5", "configurations 6 and 7 completed")):
        line = found[name].split("\n", 1)[1].strip().replace("\n", " ")
        assert line.startswith(f"Not answerable yet: it needs {need} of the ViT on CIFAR-10 grid (not run: vit-"), name
    assert "No written discussion was found: write one as discussion.md beside the runs folder" in \
        (tmp_path / "report" / "report.md").read_text().replace("\n", " ")
    assert report.discussion is None


def test_problem_1_q4_is_answered_once_the_six_configurations_ran(tmp_path):
    for number, (best, seconds) in enumerate([(180, 40.0), (170, 41.0), (900, 35.0), (400, 45.0), (150, 50.0),
                                              (160, 70.0)], start=1):
        write_run(tmp_path / "runs", f"lstm-{number}", rising(1000.0, best), rising(1200.0, best * 0.8),
                  seconds=seconds, test=best * 1.05)
    write_report([tmp_path / "runs"], tmp_path / "report")
    q4 = sections((tmp_path / "report" / "report.md").read_text())["Problem 1 Q4"].replace("\n  ", " ")
    assert "Not answerable yet" not in q4
    assert "For wall-clock time: lstm-3 " in q4 and "For generalization: lstm-5 " in q4
    assert "the best of the 6 completed configurations among 1-6" in q4


def test_the_discussion_is_found_beside_its_runs_only(tmp_path):
    for name in ("ours", "theirs"):
        write_run(tmp_path / name / "runs", "vit-2", [0.3, 0.4], [0.3, 0.5], test=0.39)
    (tmp_path / "ours" / "discussion.md").write_text(discussion_text(["Problem 3 Q2"]))
    ours = write_report([tmp_path / "ours" / "runs"], tmp_path / "ours" / "report")
    theirs = write_report([tmp_path / "theirs" / "runs"], tmp_path / "theirs" / "report")
    assert ours.discussion == tmp_path / "ours" / "discussion.md" and theirs.discussion is None
    assert "Written about Problem 3 Q2" in (tmp_path / "ours" / "report" / "report.md").read_text()
    assert "Written about" not in (tmp_path / "theirs" / "report" / "report.md").read_text()
    explicit = write_report([tmp_path / "theirs" / "runs"], tmp_path / "explicit",
                            discussion=tmp_path / "ours" / "discussion.md")
    markdown = (tmp_path / "explicit" / "report.md").read_text()
    assert explicit.discussion is not None and "Written about Problem 3 Q2" in markdown
    assert f"--discussion {tmp_path / 'ours' / 'discussion.md'}` regenerates it" in markdown.replace("\n", " ")


def test_the_html_renders_the_discussions_markup(written):
    page = (written / "report.html").read_text()
    assert "<em>emphasised</em>, with <code>code</code> and <strong>bold</strong>, over two lines." in page
    assert "<li>first point of Problem 2 Q5 going on</li><li>second point of Problem 2 Q5</li>" in page
    assert "<h4>Discussion</h4>" in page


@pytest.mark.parametrize("text, message", [
    ("## Problem 2 Q1\nNot a question of the report.\n", "discussion.md:1: '## Problem 2 Q1' is not a question"),
    ("Some words first.\n\n## Problem 3 Q5\nText.\n", "discussion.md:1: text before the first `## Problem P QN`"),
    ("## Problem 3 Q5\nOne.\n## Problem 3 Q5\nTwo.\n", "discussion.md:3: a second heading for Problem 3 Q5"),
    ("## Problem 3 Q5\n### A sub-heading\nText.\n", "discussion.md:2: '### A sub-heading': a discussion has one"),
])
def test_a_discussion_the_report_cannot_place_is_a_clear_error(tmp_path, capsys, text, message):
    write_run(tmp_path / "runs", "vit-2", [0.3, 0.4], [0.3, 0.5], test=0.39)
    (tmp_path / "discussion.md").write_text(text)
    with pytest.raises(DiscussionError, match=re.escape(message)):
        read_discussion(tmp_path / "discussion.md")
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()  # nothing written


def test_a_missing_discussion_file_is_a_usage_error(tmp_path, capsys):
    write_run(tmp_path / "runs", "vit-2", [0.3, 0.4], [0.3, 0.5], test=0.39)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--discussion",
                 str(tmp_path / "absent.md")]) == 2
    assert "no such discussion file" in capsys.readouterr().err and not (tmp_path / "report").exists()


def test_the_cnns_settings_are_the_reference_trainings_not_the_specifications(tmp_path):
    write_run(tmp_path / "runs", "cnn-resnet", [0.5, 0.6], [0.5, 0.7], test=0.58, epochs=10)
    report = write_report([tmp_path / "runs"], tmp_path / "report")
    run = report.study.get("cnn-resnet")
    assert run.deviations == ["epochs 10 (reference training 180)"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "spec 180" not in markdown and "NO: epochs 10 (reference training 180)" in markdown


def test_a_question_names_the_runs_it_waits_for(tmp_path):
    """PreNorm against PostNorm needs configurations 6 and 7: with 1-6 complete and 7 not run, only it waits."""
    write_study(tmp_path / "runs", with_vit7=False)
    write_report([tmp_path / "runs"], tmp_path / "report")
    found = sections((tmp_path / "report" / "report.md").read_text())
    assert found["Problem 3 Q5"].split("\n", 1)[1].strip().replace("\n", " ") == (
        "Not answerable yet: it needs configurations 6 and 7 completed of the ViT on CIFAR-10 grid (not run: vit-7).")
    assert "Not answerable yet" not in found["Problem 3 Q3"] + found["Problem 3 Q4"]
