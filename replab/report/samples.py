"""A short text sample per LSTM run, so a reader sees what each perplexity means.

Drawn from the run's ``best.pt`` with fixed settings (``REPORT_SAMPLE``, seed included) and a fixed prompt (the
opening words of the first article of the validation split), on the CPU: the same checkpoint gives the same text.
Runs without ``best.pt`` (published runs carry no checkpoints) get no sample, and the report says so; so do runs
with one when the data folder has no GPT-1 vocabulary to decode their token ids with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replab.generate import SampleSettings, load_lstm, sample
from replab.report.runs import RunView
from replab.text import GPT1Tokenizer

REPORT_SAMPLE = SampleSettings(tokens=40, temperature=0.8, top_k=40, seed=0)
REPORT_PROMPT = "homarus gammarus, known as the european lobster or common lobster, is a"


@dataclass
class RunSample:
    key: str
    epoch: int | None
    prompt: str
    continuation: str


def run_sample(run: RunView, tokenizer: GPT1Tokenizer) -> RunSample | None:
    """The sample of one LSTM run, or None where it has no loadable ``best.pt``."""
    try:
        model, record = load_lstm(run.record.path, "best")
    except ValueError:
        return None
    drawn = sample(model, REPORT_PROMPT, REPORT_SAMPLE, tokenizer)
    return RunSample(run.key, record.get("epoch"), drawn.prompt, drawn.continuation.replace("`", "'"))


def samples_text(runs: list[RunView], data_dir: str | Path | None = None) -> tuple[str, list[str]]:
    """The introduction and one bullet per LSTM run (a sample, or why there is none). ``data_dir``: the data
    folder holding GPT-1's vocabulary (``resolve_data_dir``'s default if None), read only if a run has a
    checkpoint."""
    intro = (f"Samples, not results: the continuation each run's best checkpoint (`best.pt`) writes after the prompt "
             f"\u201c{REPORT_PROMPT}\u201d ({REPORT_SAMPLE.describe()}; drawn on the CPU, GPT-1 BPE decoded).")
    items = []
    tokenizer: GPT1Tokenizer | None = None
    for run in runs:
        if not (run.record.path / "best.pt").is_file():
            items.append(f"{run.key}: no sample (its folder holds no best.pt).")
            continue
        try:
            tokenizer = tokenizer or GPT1Tokenizer.from_data_dir(data_dir)
        except FileNotFoundError:
            items.append(f"{run.key}: no sample (the data folder holds no GPT-1 vocabulary, gpt1-bpe/: "
                         "`replab data download --vocabulary`).")
            continue
        drawn = run_sample(run, tokenizer)
        if drawn is None:
            items.append(f"{run.key}: no sample (its best.pt cannot be loaded).")
        else:
            epoch = f"epoch {drawn.epoch}" if drawn.epoch is not None else "best epoch"
            items.append(f"{run.key} (best.pt, {epoch}), sample: \u201c\u2026 {drawn.continuation}\u201d")
    return intro, items
