"""The ``replab report`` command (``replab reproduce``, which trains the grids first, is ``replab.reproduce``).

``replab report [RUNS_DIR ...] [--out REPORT_DIR]``
    Reads every run folder under the RUNS_DIRs (default ``runs``), complete or not, and writes REPORT_DIR
    (default ``report``): ``figures/`` (PNG at 300 dpi and PDF: learning curves of every run, one overlay of
    every configuration per grid, memory per configuration), ``tables/`` (Markdown and LaTeX/booktabs: results
    of the LSTM and ViT grids, runs and provenance, overfitting, memory, comparison with the CNNs),
    ``report.md`` and ``report.html`` (self-contained: images embedded, opens offline; ``--link-figures``: it
    links ``figures/*.png`` instead, for a report kept in git: 35 KiB instead of 2.4 MiB for results/report)
    with numbered captions: a headline, then one section per question of the specification with its tables,
    figures and findings computed from the runs, and the written discussion of ``--discussion FILE`` (default:
    ``discussion.md`` beside the runs folder). Unfinished, diverged and missing runs are shown as such; runs with
    batch limits or changed hyperparameters are flagged as not being at their full setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replab.exits import EXIT_OK, UsageError
from replab.report.discussion import DiscussionError
from replab.report.document import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", default=["runs"], metavar="RUNS_DIR", help="run folders (default: runs)")
    parser.add_argument("--out", default="report", metavar="DIR", help="report folder (default: report)")
    parser.add_argument("--link-figures", action="store_true",
                        help="report.html links figures/*.png instead of embedding them (small; keep the folder whole)")
    parser.add_argument("--data-dir", metavar="DIR", help="data folder whose GPT-1 vocabulary (gpt1-bpe/) decodes "
                        "the samples of LSTM runs without sample.json (default: $REPLAB_DATA, else ./data)")
    parser.add_argument("--discussion", metavar="FILE", help="the written discussion, one '## Problem P QN' heading "
                        "per question (default: discussion.md beside the runs folder, if there is one)")


def cmd_report(args) -> int:
    absent = [folder for folder in args.runs if not Path(folder).is_dir()]
    if absent:
        raise UsageError(f"no such runs folder: {', '.join(absent)}")
    if args.discussion and not Path(args.discussion).is_file():
        raise UsageError(f"no such discussion file: {args.discussion}")
    try:
        report = write_report(args.runs, args.out, link_figures=args.link_figures, data_dir=args.data_dir,
                              discussion=args.discussion)
    except DiscussionError as error:
        raise UsageError(str(error)) from None
    print(f"report: {report.out / 'report.html'} and report.md ({len(report.study.runs)} runs, "
          f"{len(report.figures)} figures, {len(report.tables)} tables, {len(report.findings)} findings)")
    return EXIT_OK
