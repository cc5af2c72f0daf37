"""LSTM language model of the specification (Problem 1), on GPT-1 token ids.

Embedding (padding id 0) -> ``nn.LSTM`` -> 2-layer MLP classifier whose last weight *is* the embedding matrix
(tied, as in GPT-1). ``forward`` returns log-probabilities; ``loss`` is the specification's per-sequence mean
negative log-likelihood, averaged over the batch.

Shapes: B batch, T sequence length, V vocabulary size, L layers, Hd hidden size.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LSTMConfig:
    """The LSTM's hyperparameters in an experiment (defaults: the specification's). The vocabulary comes from the
    data, and with a pretrained embeddings file its width too."""

    num_layers: int = 1
    hidden_size: int = 512
    embedding_size: int = 768


# Parameter names of checkpoints written before the classifier's layers were named (``classifier.0.weight``...).
_OLD_CLASSIFIER_KEYS = {"classifier.0.": "classifier.hidden.", "classifier.2.": "classifier.output."}


class LSTM(nn.Module):
    """Defaults: 34,107,392 parameters, 3,019,520 of them learnable (embeddings frozen).

    ``classifier`` is the 2-layer MLP ``hidden`` (Linear) -> ``relu`` -> ``output`` (Linear, no bias, its weight the
    embedding matrix); ``classifier[0..2]`` still index the same layers.
    """

    def __init__(
        self,
        vocabulary_size=40479,
        embedding_size=LSTMConfig.embedding_size,
        hidden_size=LSTMConfig.hidden_size,
        num_layers=LSTMConfig.num_layers,
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
        self.classifier = nn.Sequential(OrderedDict(
            hidden=nn.Linear(hidden_size, embedding_size),
            relu=nn.ReLU(),
            output=nn.Linear(embedding_size, vocabulary_size, bias=False),
        ))
        # Tie the output projection to the token embeddings (GPT-1), then freeze them unless asked not to.
        self.classifier.output.weight = self.embedding.weight
        self.embedding.requires_grad_(learn_embeddings)

    @classmethod
    def from_config(cls, config: LSTMConfig, vocabulary_size: int = 40479, embeddings_file=None) -> LSTM:
        """The experiment's model: with ``embeddings_file``, its frozen pretrained embeddings (which set the
        vocabulary and the embedding size); else learned embeddings initialised N(0, 0.02), as GPT-1's were (the
        default N(0, 1), tied to the output layer, gives logits so large that the first perplexity is several
        times the vocabulary size)."""
        if embeddings_file:
            return cls.load_embeddings_from(embeddings_file, config.hidden_size, config.num_layers, False)
        model = cls(vocabulary_size, config.embedding_size, config.hidden_size, config.num_layers,
                    learn_embeddings=True)
        with torch.no_grad():
            model.embedding.weight.normal_(0.0, 0.02)
            model.embedding.weight[0].zero_()
        return model

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the classifier's layers were named (``classifier.0``/``classifier.2``)."""
        for old, new in _OLD_CLASSIFIER_KEYS.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def hidden_features(self, inputs: torch.Tensor, hidden_states) -> tuple[torch.Tensor, tuple]:
        """The classifier's input features. inputs (B, T) int64 -> ((B, T, embedding_size), (h, c))."""
        outputs, hidden_states = self.lstm(self.embedding(inputs), hidden_states)
        return self.classifier.relu(self.classifier.hidden(outputs)), hidden_states

    def forward(self, inputs: torch.Tensor, hidden_states=None, targets=None, mask=None):
        """Log-probabilities of the next tokens.

        inputs: (B, T) int64 token ids; hidden_states: (h, c), each (L, B, Hd) (None: zeros).
        Returns ``(log_probas (B, T, V), (h, c))``, the final hidden state of the LSTM.

        With ``targets`` (B, T) int64 (and optionally ``mask`` (B, T), None: every position counts), it returns
        instead ``(loss, nll)``: ``loss`` the specification's loss (``self.loss`` of the log-probabilities: the
        per-sequence mean NLL, then the mean over sequences), a scalar with gradients; ``nll`` (B, T) float32, the
        negative log-likelihood of each target without gradient, 0 where ``mask`` is 0. Both come from
        ``sequence_nll``: the output layer, the log-softmax and the loss fused, the (B, T, V) log-probabilities
        never held. That is the training path: it goes through ``forward`` so that DDP and ``torch.compile`` wrap
        the model itself.
        """
        if hidden_states is None:
            hidden_states = self.initial_states(inputs.shape[0], device=inputs.device)
        features, hidden_states = self.hidden_features(inputs, hidden_states)
        if targets is not None:
            return sequence_nll(self, features, targets, mask)
        logits = self.classifier.output(features)
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
            raise FileNotFoundError(f"embeddings file not found: {path} (get GPT-1's with `replab data download "
                                    "--embeddings`)") from error
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


def sequence_mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """The weight of each position in ``masked_sequence_mean``: ``sum(values * weights) == masked_sequence_mean(
    values, mask)`` for any values. mask: (B, T) -> (B, T) float32; ``mask / T_j / S`` with ``T_j`` the sequence's
    unmasked positions and ``S`` the number of sequences that have any (0 where the mask is 0)."""
    mask = mask.float()
    counts = mask.sum(dim=1, keepdim=True)
    present = (counts > 0).float()
    return mask / counts.clamp_min(1.0) * present / present.sum().clamp_min(1.0)


def sequence_nll(
    model: LSTM, features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification's loss and the per-token NLL from the classifier features, fused (``LSTM.forward`` with
    targets).

    features: (B, T, embedding_size); targets: (B, T); mask (optional): (B, T), 1 where a prediction counts
    -> ``(loss, nll)``: ``loss`` scalar, equal to ``masked_sequence_mean(nll, mask)`` in value and gradients;
    ``nll`` (B, T) float32 without gradient, 0 where the mask is 0. Through ``fused_linear_weighted_nll``, which
    knows each position's weight in the loss and so computes the gradients in the same pass as the loss.
    """
    if mask is None:
        mask = torch.ones(targets.shape, device=targets.device)
    weights = sequence_mean_weights(mask)
    loss, nll = fused_linear_weighted_nll(features.flatten(0, 1), model.classifier.output.weight, targets.flatten(),
                                          weights.flatten())
    return loss, nll.view(targets.shape)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype for ``device_type`` if autocast is on there, else None (torch >= 2.3)."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (TypeError, AttributeError):  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


def _chunk_rows(vocabulary_size: int, device: torch.device) -> int:
    """Rows per chunk: about 32M logits (128 MB in float32; ~830 rows of the GPT-1 vocabulary) on the CPU, 64M on
    accelerators, at least 16 rows. Fewer, larger matrix products keep the CPU's products efficient (measured:
    chunks of 1024 rows beat chunks of 207 by ~8% of the whole LSTM step) for a fraction of the (B*T, V) memory."""
    budget = (1 << 25) if device.type == "cpu" else (1 << 26)
    return max(16, budget // max(vocabulary_size, 1))


# Above this NLL (target probability below ~1e-30) the float32 softmax's target probability is too close to
# underflow for its logarithm to be trusted: such rows are recomputed with log_softmax.
_UNDERFLOW_NLL = 69.0


def _softmax_chunks(x, w, targets, rows, chunk):
    """The rows of ``x`` (all, or those listed in ``rows``), ``chunk`` at a time, with their float32 softmax over
    ``x @ w.T`` and the NLL of their targets ``-log(softmax[target])`` (rows whose target probability is below
    ~1e-30, where that logarithm loses precision, are recomputed with ``log_softmax``).

    Yields ``(index, xc, tc, probas, buffer, nll_c)``: ``index`` the chunk's rows (a slice, or indices into
    ``rows``); ``xc`` (m, E), ``tc`` (m, 1) their features and targets; ``probas`` (m, V) float32 their softmax,
    which the caller may overwrite; ``buffer`` (m, V) in ``x``'s dtype, free for the caller (it is ``probas``
    itself for float32 on the CPU); ``nll_c`` (m,). The buffers are reused from chunk to chunk: memory holds the
    logits of one chunk, never the whole (N, V).
    """
    count = x.shape[0] if rows is None else rows.numel()
    size = min(chunk, count)
    logits = x.new_empty(size, w.shape[0])
    # float32 on the CPU: the softmax overwrites the logits in place (the kernel reads each row before writing
    # it; tested); elsewhere, or from another dtype, into its own float32 buffer
    in_place = x.dtype == torch.float32 and x.device.type == "cpu"
    softmax = logits if in_place else logits.new_empty(logits.shape, dtype=torch.float32)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        index = slice(start, stop) if rows is None else rows[start:stop]
        xc, tc = x[index], targets[index].unsqueeze(1)
        m = stop - start
        lc, sc = logits[:m], softmax[:m]
        torch.mm(xc, w.t(), out=lc)
        probas = torch.softmax(lc, -1, dtype=torch.float32, out=sc)
        nll_c = probas.gather(1, tc).squeeze(1).log_().neg_()
        tiny = nll_c > _UNDERFLOW_NLL  # target probability (nearly) underflowed: recompute those rows
        if tiny.any():
            tiny = tiny.nonzero().squeeze(1)
            exact = torch.log_softmax(torch.mm(xc[tiny], w.t()), -1, dtype=torch.float32)
            nll_c[tiny] = exact.gather(1, tc[tiny]).squeeze(1).neg()
        yield index, xc, tc, probas, lc, nll_c


def _softmax_minus_onehot(probas, tc, buffer, row_scale=None):
    """``probas - onehot(tc)`` (each row times ``row_scale`` if given), in place, returned in ``buffer``'s dtype
    (copied there when that is not float32): the gradient of the NLL with respect to the logits."""
    probas.scatter_add_(1, tc, probas.new_full(tc.shape, -1.0))
    if row_scale is not None:
        probas.mul_(row_scale.unsqueeze(1))
    return probas if buffer.dtype == torch.float32 else buffer.copy_(probas)


def fused_linear_weighted_nll(
    features: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    row_weights: torch.Tensor,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss = sum_n row_weights[n] * nll[n]`` with ``nll[n] = -log_softmax(features @ weight.T)[n, targets[n]]``,
    and ``nll``, computed chunk by chunk of rows without ever holding the (N, V) logits.

    features: (N, E); weight: (V, E); targets: (N,) int64; row_weights: (N,), no gradient; rows of weight 0 are
    skipped (NLL 0) -> ``(loss, nll)``: ``loss`` a float32 scalar with gradients for ``features`` and ``weight``;
    ``nll`` (N,) float32, without gradient. The softmax is taken in float32; under autocast the matrix products
    run in the autocast dtype, as ``nn.Linear`` would.

    Knowing how each row enters the loss, it computes both gradients in the same pass over the chunks as the loss
    (``(softmax - onehot) * row_weight`` times ``weight`` and times ``features``, as fused linear cross-entropy
    kernels do), keeping only the (N, E) and (V, E) results; backward just scales them by the loss's gradient.
    With a learned ``weight`` that is three matrix products of the output layer's size per step, as many as an
    unfused linear layer + log-softmax (one forward, two backward), without holding its (N, V) logits and
    log-probabilities for backward and without recomputing them there.
    """
    if features.ndim != 2 or weight.ndim != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(f"expected features (N, E) and weight (V, E), got {tuple(features.shape)}, "
                         f"{tuple(weight.shape)}")
    if targets.shape != features.shape[:1]:
        raise ValueError(f"targets must have shape ({features.shape[0]},), got {tuple(targets.shape)}")
    if row_weights.shape != features.shape[:1]:
        raise ValueError(f"row_weights must have shape ({features.shape[0]},), got {tuple(row_weights.shape)}")
    compute_dtype = _autocast_dtype(features.device.type) or torch.promote_types(features.dtype, weight.dtype)
    chunk = int(chunk_rows) if chunk_rows else _chunk_rows(weight.shape[0], features.device)
    return _FusedLinearWeightedNLL.apply(features, weight, targets, row_weights.detach().float(), compute_dtype,
                                         chunk, torch.is_grad_enabled())


class _FusedLinearWeightedNLL(torch.autograd.Function):
    """The autograd function behind ``fused_linear_weighted_nll`` (inputs as documented there, already checked)."""

    @staticmethod
    def forward(ctx, features, weight, targets, row_weights, compute_dtype, chunk, grad_enabled):
        # ctx.needs_input_grad says True for a parameter that requires grad even under torch.no_grad()
        # (evaluation), where computing its gradient would be wasted work
        need_x, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        nll = features.new_zeros(features.shape[0], dtype=torch.float32)
        grad_x = features.new_zeros(features.shape, dtype=compute_dtype) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        rows = row_weights.nonzero().squeeze(1)  # the rows that count; None when all do: contiguous chunks
        rows = None if rows.numel() == row_weights.numel() else rows
        # In float16 the logits' gradients (softmax - onehot) * row weight, ~1e-9 for 40k words and 4k rows,
        # underflow, and a GradScaler cannot lift them: it scales only after this pass. They are formed divided by
        # the largest row weight instead (so at most 1), and backward multiplies it back in float32.
        unit = row_weights.max() if compute_dtype == torch.float16 and row_weights.numel() else None
        with torch.autocast(features.device.type, enabled=False):
            x = features.detach().to(compute_dtype)
            w = weight.detach().to(compute_dtype)
            for index, xc, tc, probas, buffer, nll_c in _softmax_chunks(x, w, targets, rows, chunk):
                nll[index] = nll_c
                if need_x or need_w:  # d loss / d logits = (softmax - onehot) * row weight
                    scale = row_weights[index] if unit is None else row_weights[index] / unit
                    gradient = _softmax_minus_onehot(probas, tc, buffer, scale)
                    if need_x:
                        grad_x[index] = torch.mm(gradient, w)
                    if need_w:
                        if compute_dtype == torch.float32:
                            grad_w.addmm_(gradient.t(), xc)
                        else:
                            grad_w += torch.mm(gradient.t(), xc).float()
        loss = (nll * row_weights).sum()
        ctx.mark_non_differentiable(nll)
        ctx.dtypes = features.dtype, weight.dtype
        ctx.save_for_backward(grad_x, grad_w, unit)
        return loss, nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_nll):
        grad_x, grad_w, unit = ctx.saved_tensors
        features_dtype, weight_dtype = ctx.dtypes
        if unit is not None:  # float16: the largest row weight multiplied back, in float32
            grad_loss = grad_loss.float() * unit
            grad_x = None if grad_x is None else grad_x.float()
        grad_features = None if grad_x is None else (grad_x * grad_loss.to(grad_x.dtype)).to(features_dtype)
        grad_weight = None if grad_w is None else (grad_w * grad_loss.float()).to(weight_dtype)
        return grad_features, grad_weight, None, None, None, None, None
