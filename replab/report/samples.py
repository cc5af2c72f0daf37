"""A short text sample per LSTM run, so a reader sees what each perplexity means.

Read from the run's ``sample.json``, which the run writes from its ``best.pt`` with a fixed prompt and fixed
settings (``replab.run_sample``); published runs carry it without their checkpoints. A run folder without
``sample.json`` but with a ``best.pt`` (trained before runs kept their sample) gets one drawn from it here, the
same way, when the data folder holds GPT-1's vocabulary to decode it; otherwise the report says why there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replab.generate import load_lstm, sample
from replab.report.runs import RunView
from replab.run_sample import SAMPLE_PROMPT, SAMPLE_SETTINGS, is_standard, read_sample
from replab.text import GPT1Tokenizer


@dataclass
class RunSample:
    key: str
    epoch: int | None
    prompt: str
    continuation: str
    source: str = ""  # how it was made, where it is not drawn by the run itself (a recovered sample)


def run_sample(run: RunView, tokenizer: GPT1Tokenizer) -> RunSample | None:
    """The sample of one LSTM run drawn here from its ``best.pt``, or None where it has no loadable one."""
    try:
        model, record = load_lstm(run.record.path, "best")
    except ValueError:
        return None
    drawn = sample(model, SAMPLE_PROMPT, SAMPLE_SETTINGS, tokenizer)
    return RunSample(run.key, record.get("epoch"), drawn.prompt, drawn.continuation.replace("`", "'"))


def kept_sample(run: RunView) -> RunSample | None:
    """The sample the run keeps in its ``sample.json``, or None."""
    record = read_sample(run.record.path)
    if record is None:
        return None
    source = []
    if record.get("recovered_from"):
        source.append(f"recovered from {record['recovered_from']}, not regenerated")
    if not is_standard(record):
        settings = record.get("settings") or {}
        source.append(f"prompt \u201c{record.get('prompt')}\u201d, " + ", ".join(f"{k} {v}" for k, v in
                                                                                  settings.items()))
    return RunSample(run.key, record.get("epoch"), record.get("prompt", ""),
                     record["continuation"].replace("`", "'"), "; ".join(source))


def samples_text(runs: list[RunView], data_dir: str | Path | None = None) -> tuple[str, list[str]]:
    """The introduction and one bullet per LSTM run (a sample, or why there is none). ``data_dir``: the data
    folder holding GPT-1's vocabulary (``resolve_data_dir``'s default if None), read only for a run with a
    checkpoint and no ``sample.json``."""
    intro = (f"Samples, not results: the continuation each run's best checkpoint (`best.pt`) writes after the prompt "
             f"\u201c{SAMPLE_PROMPT}\u201d ({SAMPLE_SETTINGS.describe()}; drawn on the CPU, GPT-1 BPE decoded; "
             "kept in the run's `sample.json`).")
    items = []
    tokenizer: GPT1Tokenizer | None = None
    for run in runs:
        drawn = kept_sample(run)
        if drawn is None and not (run.record.path / "best.pt").is_file():
            items.append(f"{run.key}: no sample (its folder holds no sample.json and no best.pt).")
            continue
        if drawn is None:
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
            source = f"; {drawn.source}" if drawn.source else ""
            items.append(f"{run.key} (best.pt, {epoch}{source}), sample: \u201c\u2026 {drawn.continuation}\u201d")
    return intro, items
