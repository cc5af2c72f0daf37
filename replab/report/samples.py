"""A short text sample per LSTM run, so a reader sees what each perplexity means.

Drawn from the run's ``best.pt`` with fixed settings (``REPORT_SAMPLE``, seed included) and a fixed prompt (the
opening words of the first article of the validation split), on the CPU: the same checkpoint gives the same text.
Runs without ``best.pt`` (published runs carry no checkpoints) get no sample, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from replab.generate import SampleSettings, load_lstm, sample
from replab.report.runs import RunView

REPORT_SAMPLE = SampleSettings(tokens=40, temperature=0.8, top_k=40, seed=0)
REPORT_PROMPT = "homarus gammarus, known as the european lobster or common lobster, is a"


@dataclass
class RunSample:
    key: str
    epoch: int | None
    prompt: str
    continuation: str


def run_sample(run: RunView) -> RunSample | None:
    """The sample of one LSTM run, or None where it has no loadable ``best.pt``."""
    try:
        model, record = load_lstm(run.record.path, "best")
    except ValueError:
        return None
    drawn = sample(model, REPORT_PROMPT, REPORT_SAMPLE)
    return RunSample(run.key, record.get("epoch"), drawn.prompt, drawn.continuation.replace("`", "'"))


def samples_text(runs: list[RunView]) -> tuple[str, list[str]]:
    """The introduction and one bullet per LSTM run (a sample, or why there is none)."""
    intro = (f"Samples, not results: the continuation each run's best checkpoint (`best.pt`) writes after the prompt "
             f"\u201c{REPORT_PROMPT}\u201d ({REPORT_SAMPLE.describe()}; drawn on the CPU, GPT-1 BPE decoded).")
    items = []
    for run in runs:
        drawn = run_sample(run)
        if drawn is None:
            items.append(f"{run.key}: no sample (its folder holds no best.pt).")
        else:
            epoch = f"epoch {drawn.epoch}" if drawn.epoch is not None else "best epoch"
            items.append(f"{run.key} (best.pt, {epoch}), sample: \u201c\u2026 {drawn.continuation}\u201d")
    return intro, items
