"""LSTM language model of the specification (Problem 1), on GPT-1 token ids.

Embedding (padding id 0) -> ``nn.LSTM`` -> 2-layer MLP classifier whose last weight *is* the embedding matrix
(tied, as in GPT-1). ``forward`` returns log-probabilities; ``loss`` is the specification's per-sequence mean
negative log-likelihood, averaged over the batch.

Shapes: B batch, T sequence length, V vocabulary size, L layers, Hd hidden size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LSTM(nn.Module):
    """Defaults: 34,107,392 parameters, 3,019,520 of them learnable (embeddings frozen)."""

    def __init__(
        self,
        vocabulary_size=40479,
        embedding_size=768,
        hidden_size=512,
        num_layers=1,
        learn_embeddings=False,
        _embedding_weight=None,
    ):
        super().__init__()
        self.vocabulary_size = vocabulary_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.learn_embeddings = learn_embeddings

        self.embedding = nn.Embedding(vocabulary_size, embedding_size, padding_idx=0, _weight=_embedding_weight)
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.classifier = nn.Sequential(
            nn.Linear(hidden_size, embedding_size),
            nn.ReLU(),
            nn.Linear(embedding_size, vocabulary_size, bias=False),
        )
        # Tie the output projection to the token embeddings (GPT-1), then freeze them unless asked not to.
        self.classifier[2].weight = self.embedding.weight
        self.embedding.requires_grad_(learn_embeddings)

    def hidden_features(self, inputs: torch.Tensor, hidden_states) -> tuple[torch.Tensor, tuple]:
        """The classifier's input features. inputs (B, T) int64 -> ((B, T, embedding_size), (h, c))."""
        outputs, hidden_states = self.lstm(self.embedding(inputs), hidden_states)
        return self.classifier[1](self.classifier[0](outputs)), hidden_states

    def forward(self, inputs: torch.Tensor, hidden_states):
        """Log-probabilities of the next tokens.

        inputs: (B, T) int64 token ids; hidden_states: (h, c), each (L, B, Hd).
        Returns ``(log_probas (B, T, V), (h, c))``, the final hidden state of the LSTM.
        """
        features, hidden_states = self.hidden_features(inputs, hidden_states)
        logits = self.classifier[2](features)
        return torch.log_softmax(logits.float(), dim=-1), hidden_states

    def loss(self, log_probas: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the sequences, then mean over the batch.

        log_probas: (B, T, V); targets: (B, T) int64; mask: (B, T), 1 where a prediction counts, else 0.
        For each sequence, ``-1/T_j sum_t mask * log p(w_{t+1})`` with ``T_j`` its number of unmasked positions;
        the result is the mean over the sequences that have at least one unmasked position. A sequence with
        none contributes nothing (no NaN); a batch with none at all gives a loss of 0 (still differentiable).
        Returns a scalar.
        """
        nll = -log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
        return masked_sequence_mean(nll, mask)

    def initial_states(self, batch_size: int, device=None):
        """Zero ``(h_0, c_0)``, each (L, B, Hd), on ``device``."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        return (
            torch.zeros(shape, dtype=torch.float, device=device),
            torch.zeros(shape, dtype=torch.float, device=device),
        )

    @classmethod
    def load_embeddings_from(cls, filename, hidden_size=512, num_layers=1, learn_embeddings=False) -> LSTM:
        """A model whose token embeddings come from the npz file ``filename`` (key ``tokens``, (V, E))."""
        path = Path(filename)
        try:
            with np.load(path) as embeddings:
                weight = torch.from_numpy(np.asarray(embeddings["tokens"], dtype=np.float32))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"embeddings file not found: {path} (pass the course's embeddings.npz)") from error
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(f"{path} is not an npz file with a 'tokens' array of shape (V, E): {error}") from error
        if weight.ndim != 2:
            raise ValueError(f"{path}: 'tokens' must have shape (vocabulary, embedding), got {tuple(weight.shape)}")
        vocabulary_size, embedding_size = weight.shape
        return cls(vocabulary_size, embedding_size, hidden_size, num_layers, learn_embeddings, _embedding_weight=weight)


def masked_sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence masked mean, then the mean over sequences that have any unmasked position.

    values, mask: (B, T) -> scalar.
    """
    mask = mask.to(values.dtype)
    counts = mask.sum(dim=1)
    per_sequence = (values * mask).sum(dim=1) / counts.clamp_min(1.0)
    present = (counts > 0).to(values.dtype)
    return (per_sequence * present).sum() / present.sum().clamp_min(1.0)


def token_nll(model: LSTM, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood from the classifier features, without materialising log-probabilities.

    Mathematically equal to ``-model.forward(...)[0].gather(-1, targets)`` (the training fast path).
    features: (B, T, embedding_size); targets: (B, T) -> (B, T) float32.
    """
    logits = model.classifier[2](features)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
