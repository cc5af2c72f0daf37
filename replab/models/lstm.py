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

from replab.models.precision import compute_dtype, upcast


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
        per-sequence mean NLL, then the mean over sequences), a scalar with gradients; ``nll`` (B, T), the negative
        log-likelihood of each target without gradient, 0 where ``mask`` is 0; both float32 (float64 for a float64
        model). Both come from ``sequence_nll``: the output layer, the log-softmax and the loss fused, the (B, T, V)
        log-probabilities never held. That is the training path: it goes through ``forward`` so that DDP and
        ``torch.compile`` wrap the model itself.
        """
        if hidden_states is None:
            hidden_states = self.initial_states(inputs.shape[0], device=inputs.device)
        features, hidden_states = self.hidden_features(inputs, hidden_states)
        if targets is not None:
            return sequence_nll(self, features, targets, mask)
        logits = self.classifier.output(features)
        return torch.log_softmax(upcast(logits), dim=-1), hidden_states

    def loss(self, log_probas: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the sequences, then mean over the batch.

        log_probas: (B, T, V); targets: (B, T) int64; mask: (B, T), 1 where a prediction counts, else 0.
        For each sequence, ``-1/T_j sum_t mask * log p(w_{t+1})`` with ``T_j`` its number of unmasked positions;
        the result is the mean over the sequences that have at least one unmasked position. A sequence with
        none contributes nothing (no NaN); a batch with none at all gives a loss of 0 (still differentiable).
        Returns a scalar.
        """
        nll = -log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return masked_sequence_mean(upcast(nll), mask)

    def initial_states(self, batch_size: int, device=None):
        """Zero ``(h_0, c_0)``, each (L, B, Hd), on ``device``, in the dtype of the LSTM's weights."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        dtype = self.lstm.weight_ih_l0.dtype
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

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
    values, mask)`` for any values. mask: (B, T) -> (B, T) float32 (float64 for a float64 mask); ``mask / T_j / S``
    with ``T_j`` the sequence's unmasked positions and ``S`` the number of sequences that have any (0 where the mask
    is 0)."""
    mask = upcast(mask)  # bool and integer masks: float32
    counts = mask.sum(dim=1, keepdim=True)
    present = (counts > 0).to(mask.dtype)
    return mask / counts.clamp_min(1.0) * present / present.sum().clamp_min(1.0)


def sequence_nll(
    model: LSTM, features: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification's loss and the per-token NLL from the classifier features, fused (``LSTM.forward`` with
    targets).

    features: (B, T, embedding_size); targets: (B, T); mask (optional): (B, T), 1 where a prediction counts
    -> ``(loss, nll)``: ``loss`` scalar, equal to ``masked_sequence_mean(nll, mask)`` in value and gradients;
    ``nll`` (B, T) without gradient, 0 where the mask is 0 (both float32, float64 for float64 features). Through
    ``fused_linear_weighted_nll``, which knows each position's weight in the loss and so computes the gradients in
    the same pass as the loss.
    """
    if mask is None:
        mask = torch.ones(targets.shape, dtype=compute_dtype(features.dtype), device=targets.device)
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
    """The rows of ``x`` (all, or those listed in ``rows``), ``chunk`` at a time, with their softmax over
    ``x @ w.T`` in the compute dtype of ``replab.models.precision`` (float32, float64 for float64 ``x``) and the NLL
    of their targets ``-log(softmax[target])`` (rows whose target probability is below ~1e-30, where that logarithm
    loses precision, are recomputed with ``log_softmax``).

    Yields ``(index, xc, tc, probas, buffer, nll_c)``: ``index`` the chunk's rows (a slice, or indices into
    ``rows``); ``xc`` (m, E), ``tc`` (m, 1) their features and targets; ``probas`` (m, V) their softmax, which the
    caller may overwrite; ``buffer`` (m, V) in ``x``'s dtype, free for the caller (it is ``probas`` itself when
    ``x`` is in the compute dtype, on the CPU); ``nll_c`` (m,). The buffers are reused from chunk to chunk: memory
    holds the logits of one chunk, never the whole (N, V).
    """
    count = x.shape[0] if rows is None else rows.numel()
    size = min(chunk, count)
    accumulate = compute_dtype(x.dtype)
    logits = x.new_empty(size, w.shape[0])
    # on the CPU the softmax overwrites logits of its own dtype in place (the kernel reads each row before writing
    # it; tested); elsewhere, or from a 16-bit dtype, it writes into its own buffer
    in_place = x.dtype == accumulate and x.device.type == "cpu"
    softmax = logits if in_place else logits.new_empty(logits.shape, dtype=accumulate)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        index = slice(start, stop) if rows is None else rows[start:stop]
        xc, tc = x[index], targets[index].unsqueeze(1)
        m = stop - start
        lc, sc = logits[:m], softmax[:m]
        torch.mm(xc, w.t(), out=lc)
        probas = torch.softmax(lc, -1, dtype=accumulate, out=sc)
        nll_c = probas.gather(1, tc).squeeze(1).log_().neg_()
        tiny = nll_c > _UNDERFLOW_NLL  # target probability (nearly) underflowed: recompute those rows
        if tiny.any():
            tiny = tiny.nonzero().squeeze(1)
            exact = torch.log_softmax(torch.mm(xc[tiny], w.t()), -1, dtype=accumulate)
            nll_c[tiny] = exact.gather(1, tc[tiny]).squeeze(1).neg()
        yield index, xc, tc, probas, lc, nll_c


def _softmax_minus_onehot(probas, tc, buffer):
    """``probas - onehot(tc)``, in place, returned in ``buffer``'s dtype (copied there when that is not
    ``probas``' dtype): the gradient of the NLL with respect to the logits, before the rows' weights."""
    probas.scatter_add_(1, tc, probas.new_full(tc.shape, -1.0))
    return probas if buffer.dtype == probas.dtype else buffer.copy_(probas)


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
    skipped (NLL 0) -> ``(loss, nll)``: ``loss`` a scalar with gradients for ``features`` and ``weight``; ``nll``
    (N,), without gradient. Both are float32 (float64 for float64 inputs), as is the softmax; under autocast the
    matrix products run in the autocast dtype, as ``nn.Linear`` would.

    Knowing how each row enters the loss, it computes both gradients in the same pass over the chunks as the loss
    (``(softmax - onehot) * row_weight`` times ``weight`` and times ``features``, as fused linear cross-entropy
    kernels do), keeping only the (N, E) and (V, E) results; backward just scales them by the loss's gradient.
    With a learned ``weight`` that is three matrix products of the output layer's size per step, as many as an
    unfused linear layer + log-softmax (one forward, two backward), without holding its (N, V) logits and
    log-probabilities for backward and without recomputing them there. The rows' weights scale the (m, E)
    operands (features before the weight's product, the result of the features' one), not the (m, V) softmax:
    one pass less over the chunk.
    """
    if features.ndim != 2 or weight.ndim != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(f"expected features (N, E) and weight (V, E), got {tuple(features.shape)}, "
                         f"{tuple(weight.shape)}")
    if targets.shape != features.shape[:1]:
        raise ValueError(f"targets must have shape ({features.shape[0]},), got {tuple(targets.shape)}")
    if row_weights.shape != features.shape[:1]:
        raise ValueError(f"row_weights must have shape ({features.shape[0]},), got {tuple(row_weights.shape)}")
    matmul_dtype = _autocast_dtype(features.device.type) or torch.promote_types(features.dtype, weight.dtype)
    chunk = int(chunk_rows) if chunk_rows else _chunk_rows(weight.shape[0], features.device)
    row_weights = row_weights.detach().to(compute_dtype(matmul_dtype))
    return _FusedLinearWeightedNLL.apply(features, weight, targets, row_weights, matmul_dtype, chunk,
                                         torch.is_grad_enabled())


class _FusedLinearWeightedNLL(torch.autograd.Function):
    """The autograd function behind ``fused_linear_weighted_nll`` (inputs as documented there, already checked;
    ``row_weights`` in the compute dtype (``replab.models.precision``))."""

    @staticmethod
    def forward(ctx, features, weight, targets, row_weights, matmul_dtype, chunk, grad_enabled):
        # ctx.needs_input_grad says True for a parameter that requires grad even under torch.no_grad()
        # (evaluation), where computing its gradient would be wasted work
        need_x, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        accumulate = row_weights.dtype
        nll = features.new_zeros(features.shape[0], dtype=accumulate)
        grad_x = features.new_zeros(features.shape, dtype=accumulate) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if need_w else None
        rows = row_weights.nonzero().squeeze(1)  # the rows that count; None when all do: contiguous chunks
        rows = None if rows.numel() == row_weights.numel() else rows
        # float16 cannot hold features times row weights (~1/4096 each): its products see the weights divided by
        # the largest one (so at most 1), and the weight's gradient is multiplied back by it in float32
        unit = row_weights.max() if matmul_dtype == torch.float16 and row_weights.numel() else None
        with torch.autocast(features.device.type, enabled=False):
            x = features.detach().to(matmul_dtype)
            w = weight.detach().to(matmul_dtype)
            for index, xc, tc, probas, buffer, nll_c in _softmax_chunks(x, w, targets, rows, chunk):
                nll[index] = nll_c
                if not (need_x or need_w):
                    continue
                # d loss / d logits = (softmax - onehot) * row weight; the weights scale the (m, E) operands
                gradient = _softmax_minus_onehot(probas, tc, buffer)
                scale = row_weights[index].unsqueeze(1)
                if need_x:
                    grad_x[index] = torch.mm(gradient, w).to(accumulate).mul_(scale)
                if need_w:
                    scaled = (xc * (scale if unit is None else scale / unit)).to(matmul_dtype)
                    if matmul_dtype == accumulate:
                        grad_w.addmm_(gradient.t(), scaled)
                    else:  # no 16-bit product with a float32 output on every device: convert its (V, E) result
                        grad_w += torch.mm(gradient.t(), scaled)
        if unit is not None and grad_w is not None:
            grad_w.mul_(unit)
        loss = (nll * row_weights).sum()
        ctx.mark_non_differentiable(nll)
        ctx.dtypes = features.dtype, weight.dtype
        ctx.save_for_backward(grad_x, grad_w)
        return loss, nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_nll):
        grad_x, grad_w = ctx.saved_tensors
        features_dtype, weight_dtype = ctx.dtypes
        # out of place: a retained graph (gradcheck, autograd.grad(retain_graph=True)) may call backward again
        grad_features = None if grad_x is None else (grad_x * grad_loss.to(grad_x.dtype)).to(features_dtype)
        grad_weight = None if grad_w is None else (grad_w * grad_loss.to(grad_w.dtype)).to(weight_dtype)
        return grad_features, grad_weight, None, None, None, None, None
