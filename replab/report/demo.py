"""Demo runs: runs trained far below the specification's settings (batch limits, fewer epochs), such as those of
``replab reproduce --quick``. Their numbers show that the pipeline works end to end and answer none of the
specification's questions, so a report that holds one says so wherever a reader might take them for results: a
banner and its title (``banner``, ``report_title``), a mark on every figure that draws one (``figure_mark``), and
the word "demo" in every finding and headline line that names one (``mark_demo``).

A run is a demo when it trained with a batch limit, or for fewer epochs than the specification gives its
configuration. Other differences (learned LSTM embeddings, the CNN baselines' 10 of the reference training's 180
epochs, an unfinished run) are flagged as not the full setting but still answer something, and are no demo.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from replab.experiments import EXPERIMENTS
from replab.report.reference import SETTING_SOURCES
from replab.report.runs import RunView
from replab.report.study import Study

PROFILE_FILE = "reproduce.json"  # what ``replab reproduce`` writes beside its runs/ folder (its profile)


def _spec_epochs(run: RunView) -> int | None:
    """The epochs the specification gives the run's configuration (None where it gives none: the CNNs)."""
    spec = EXPERIMENTS.get(run.id)
    return spec.epochs if spec is not None and SETTING_SOURCES.get(run.task, "spec") == "spec" else None


def is_demo(run: RunView) -> bool:
    """Trained with a batch limit, or set to fewer epochs than the specification's."""
    if run.missing:
        return False
    epochs, spec = run.experiment.get("epochs"), _spec_epochs(run)
    return bool(run.limits) or (spec is not None and epochs is not None and epochs < spec)


def _profile(run: RunView) -> str | None:
    """The ``replab reproduce`` profile (``quick``) of the folder the run lies in, if it was made by it."""
    try:
        record = json.loads((run.record.path.parent.parent / PROFILE_FILE).read_text())
        return record["profile"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def demo_setting(run: RunView) -> str:
    """``2 epochs × 2 batches`` (a training batch limit) or ``2 of 10 epochs``."""
    epochs, spec = run.experiment.get("epochs"), _spec_epochs(run)
    limit = run.settings.get("limit_train_batches")
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"
    if limit:
        return f"{plural(epochs, 'epoch')} × {plural(limit, 'batch').replace('batchs', 'batches')}"
    if spec is not None and epochs is not None and epochs < spec:
        return f"{epochs} of {spec} epochs"
    return "evaluation on " + "; ".join(run.limits)


def demo_mark(run: RunView) -> str:
    """What the figures of a demo run say on them, e.g. ``quick demo: 2 epochs × 2 batches``."""
    profile = _profile(run)
    return f"{profile + ' ' if profile and profile != 'full' else ''}demo: {demo_setting(run)}"


def figure_mark(runs: Iterable[RunView]) -> str | None:
    """The mark of a figure that draws these runs: None without a demo run among them; one setting spelled out;
    several left to the caption (``caption_note`` names them), so that the mark stays within the figure's width."""
    demos = [r for r in runs if is_demo(r)]
    if not demos:
        return None
    marks = {demo_mark(r) for r in demos}
    return marks.pop() if len(marks) == 1 else "demo runs at several settings (see caption)"


def caption_note(runs: Iterable[RunView]) -> str:
    """The clause a caption of a figure drawing demo runs ends with (empty without one)."""
    groups = _groups([r for r in runs if is_demo(r)])
    if not groups:
        return ""
    return "; DEMO, numbers that answer nothing: " + "; ".join(f"{', '.join(ids)} {setting}"
                                                                for setting, ids in groups.items())


def _groups(runs: list[RunView]) -> dict[str, list[str]]:
    """The demo runs by their setting: {``2 epochs × 2 batches``: [keys]}."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(demo_setting(run), []).append(run.key)
    return groups


def demo_runs(study: Study) -> list[RunView]:
    return [r for r in study.runs if is_demo(r)]


def banner(study: Study) -> str | None:
    """The paragraph a report of demo runs opens with: which runs, at what settings, and why their numbers answer
    none of the specification's questions (None when no run is a demo)."""
    demos = demo_runs(study)
    if not demos:
        return None
    groups = "; ".join(f"{', '.join(ids)}: {setting}" for setting, ids in _groups(demos).items())
    every = len(demos) == len(study.runs)
    scope = f"every run ({len(demos)})" if every else f"{len(demos)} of the {len(study.runs)} runs"
    profile = next((p for p in map(_profile, demos) if p and p != "full"), None)
    made = f" (made by `replab reproduce --{profile}`)" if profile else ""
    rest = "" if every else (" The other runs are no demos, but every comparison with a demo run answers nothing "
                             "either.")
    return (f"**DEMO: not the study's results.** In this report{made}, {scope} trained at "
            f"demo settings far below their configurations' (every batch of the data, every epoch): {groups}. Trained "
            "this little, a model is far from where those settings take it, so their scores, rankings, times and "
            "memory answer none of the specification's questions; they show that training, evaluation and this "
            f"report work end to end.{rest} `replab reproduce` trains every run at the specification's settings "
            "for the real answers.")


def report_title(study: Study, base: str) -> str:
    """The report's title, which says ``DEMO`` when a run is one."""
    return f"{base} (DEMO: its numbers answer nothing)" if demo_runs(study) else base


def _named(text: str, key: str) -> bool:
    """Whether ``text`` names the run ``key`` (``lstm-1``, not inside ``lstm-1-fp32`` or ``vit-10``)."""
    return re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", text) is not None


def mark_demo(text: str, study: Study) -> str:
    """``text`` (a finding or a headline line) prefixed with ``Demo (...), not a result:`` where it names a demo
    run; as it is otherwise."""
    named = [r for r in demo_runs(study) if _named(text, r.key)]
    if not named:
        return text
    settings = ", ".join(_groups(named))
    return f"Demo ({settings}), not a result: {text}"


def demo_verdict(winner: RunView, *runs: RunView) -> str | None:
    """The verdict of a comparison of ``runs`` where one is a demo (None where none is): ``lstm-6 ahead in demo
    runs, which says nothing about the configurations``."""
    if not any(is_demo(r) for r in runs):
        return None
    return f"{winner.key} ahead in demo runs, which says nothing about the configurations"
