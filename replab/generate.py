"""Text from a trained LSTM run (the command ``replab generate RUN_DIR`` is in ``replab.cli``).

The checkpoint (``best.pt``, or ``last.pt`` with ``--checkpoint last``) is loaded into the run's model; the prompt
is encoded with GPT-1's BPE (``replab.text``), read by one LSTM call, and the continuation sampled one token at a
time from the hidden state ``(h, c)`` carried across steps (the prefix is never run again). Sampling: softmax of
``log-probabilities / temperature`` restricted to the ``top_k`` most likely tokens (all when 0), drawn with a
``torch.Generator`` seeded by ``seed`` (same seed, same text on a given machine), or argmax with ``greedy``. The
padding id 0 is never drawn. Characters outside GPT-1's vocabulary cannot be read by the model: they are encoded
as ``<unk>`` and named in a warning; an empty prompt is an error. Bad input raises ``ValueError`` (the command
turns it into a one-line error, exit code 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from replab.checkpoints import CheckpointError, load_checkpoint
from replab.experiments import Experiment
from replab.models import LANGUAGE_MODELING
from replab.models.lstm import LSTM
from replab.runlog import RunDir
from replab.text import GPT1Tokenizer
from replab.text.bpe import PAD_ID, UNK_ID

log = logging.getLogger("replab.generate")
CHECKPOINTS = ("best", "last")
PROMPT_TOKENS = 24  # the default prompt: at most this many tokens of the first article of the validation split


@dataclass(frozen=True)
class SampleSettings:
    """How the continuation is drawn. ``top_k`` 0: every token; ``greedy``: argmax (temperature, top-k unused)."""

    tokens: int = 60
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    greedy: bool = False

    def validate(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"--tokens must be >= 1, got {self.tokens}")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0 (0: no limit), got {self.top_k}")

    def describe(self) -> str:
        if self.greedy:
            return f"{self.tokens} tokens, greedy (argmax)"
        top_k = f"top-k {self.top_k}" if self.top_k else "no top-k"
        return f"{self.tokens} tokens, temperature {self.temperature:g}, {top_k}, seed {self.seed}"


@dataclass
class Sample:
    """A prompt and the continuation the model drew (token ids and readable text)."""

    prompt_ids: list[int]
    ids: list[int]
    prompt: str
    continuation: str
    text: str  # the prompt and its continuation, decoded together


def load_lstm(run_dir: str | Path, checkpoint: str = "best") -> tuple[LSTM, dict]:
    """The LSTM of an LSTM run folder with the weights of ``<checkpoint>.pt``, in eval mode on the CPU, and the
    checkpoint's record (``epoch``, ``best``...). ValueError if the folder is not an LSTM run or lacks it."""
    run = RunDir(Path(run_dir))
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    config = run.read_config()
    if not config:
        raise ValueError(f"{run.path} is not a run folder (no readable config.json)")
    record = config.get("experiment", {})
    try:
        experiment = Experiment.from_dict(record)
    except (KeyError, TypeError, ValueError):
        experiment = None
    if experiment is None or experiment.spec.task != LANGUAGE_MODELING:
        raise ValueError(f"{run.path} is a {record.get('task', 'unknown')} run, not an LSTM run: only LSTM runs "
                         "generate text")
    path = run.path / f"{checkpoint}.pt"
    if not path.is_file():
        why = ("a completed run keeps only best.pt, unless trained with --keep-checkpoints; pass --checkpoint best"
               if checkpoint == "last" else "checkpoints are not published with the runs; train the run, or pass "
               "--checkpoint last")
        raise ValueError(f"{path} does not exist ({why})")
    try:
        state = load_checkpoint(path, map_location="cpu")
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    try:
        weights = state["model"]
        vocabulary, width = weights["embedding.weight"].shape
        model = LSTM(vocabulary, width, experiment.config.hidden_size, experiment.config.num_layers)
        model.load_state_dict(weights)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError) as error:
        raise ValueError(f"cannot load {path} as this run's LSTM: {error}") from error
    return model.eval(), {k: v for k, v in state.items() if k in ("epoch", "best")}


def encode_prompt(prompt: str, tokenizer: GPT1Tokenizer) -> list[int]:
    """Token ids of the prompt; ValueError if it holds no token. Unknown characters are read as ``<unk>``."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty: give some text with --prompt (or omit it for the default)")
    if UNK_ID in ids:
        unknown = sorted({c for c in prompt if c.strip() and tokenizer.encode(c) == [UNK_ID]})
        log.warning("the prompt holds %s outside GPT-1's vocabulary: the model reads %s as <unk>",
                    "characters" if unknown else "<unk>", " ".join(unknown) or "it")
    return ids


def _next_token(log_probas: torch.Tensor, settings: SampleSettings, generator: torch.Generator) -> int:
    """One token id from the log-probabilities (V,) of the next token."""
    scores = log_probas.float().clone()
    scores[PAD_ID] = -float("inf")
    if settings.greedy:
        return int(scores.argmax())
    scores = scores / settings.temperature
    if settings.top_k:
        kth = torch.topk(scores, min(settings.top_k, scores.numel() - 1)).values[-1]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    return int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))


@torch.no_grad()
def generate(model: LSTM, prompt_ids: list[int], settings: SampleSettings) -> list[int]:
    """``settings.tokens`` token ids following ``prompt_ids``: one LSTM call over the prompt, then one step per
    token from the carried state ``(h, c)`` (each (L, 1, Hd))."""
    settings.validate()
    generator = torch.Generator().manual_seed(settings.seed)
    device = next(model.parameters()).device
    states = model.initial_states(1, device=device)
    log_probas, states = model(torch.tensor([prompt_ids], device=device), states)  # (1, T, V)
    out: list[int] = []
    for _ in range(settings.tokens):
        token = _next_token(log_probas[0, -1].cpu(), settings, generator)
        out.append(token)
        log_probas, states = model(torch.tensor([[token]], device=device), states)
    return out


def sample(model: LSTM, prompt: str, settings: SampleSettings, tokenizer: GPT1Tokenizer | None = None) -> Sample:
    """Encode ``prompt``, generate, and decode: the prompt as the model read it and its continuation."""
    tokenizer = tokenizer or GPT1Tokenizer.from_data_dir()
    prompt_ids = encode_prompt(prompt, tokenizer)
    ids = generate(model, prompt_ids, settings)
    head, whole = tokenizer.decode(prompt_ids), tokenizer.decode(prompt_ids + ids)
    continuation = whole[len(head):].strip() if whole.startswith(head) else tokenizer.decode(ids)
    return Sample(prompt_ids, ids, head, continuation, whole)
