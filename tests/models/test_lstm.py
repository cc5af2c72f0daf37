"""The LSTM language model: structure, parameter counts, log-probabilities and the specification's loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replab.models.lstm import LSTM, masked_sequence_mean, token_nll


def small_model(**kwargs):
    defaults = dict(vocabulary_size=50, embedding_size=12, hidden_size=10, num_layers=2)
    return LSTM(**{**defaults, **kwargs})


def reference_loss(log_probas, targets, mask):
    """The specification's formula, one sequence at a time."""
    losses = []
    for j in range(targets.shape[0]):
        n = int(mask[j].sum())
        if n == 0:
            continue
        nll = sum(-log_probas[j, t, targets[j, t]] * mask[j, t] for t in range(targets.shape[1]))
        losses.append(nll / n)
    return torch.stack(losses).mean() if losses else torch.tensor(0.0)


def test_default_parameter_counts_and_tying():
    model = LSTM()
    assert sum(p.numel() for p in model.parameters()) == 34_107_392
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3_019_520
    assert model.classifier[2].weight is model.embedding.weight
    assert model.embedding.padding_idx == 0 and model.lstm.batch_first
    learned = LSTM(learn_embeddings=True)
    assert sum(p.numel() for p in learned.parameters() if p.requires_grad) == 34_107_392


@pytest.mark.parametrize("batch,seq,layers", [(2, 7, 1), (3, 1, 2), (1, 16, 3)])
def test_forward_returns_log_probabilities_and_final_state(batch, seq, layers):
    model = small_model(num_layers=layers)
    inputs = torch.randint(0, 50, (batch, seq))
    log_probas, (h, c) = model(inputs, model.initial_states(batch))
    assert log_probas.shape == (batch, seq, 50)
    torch.testing.assert_close(log_probas.exp().sum(-1), torch.ones(batch, seq))
    assert h.shape == c.shape == (layers, batch, 10)
    # independent reference: the same modules called step by step
    emb = F.embedding(inputs, model.embedding.weight)
    out, (h_ref, c_ref) = model.lstm(emb)
    hidden = F.relu(F.linear(out, model.classifier[0].weight, model.classifier[0].bias))
    expected = F.log_softmax(hidden @ model.embedding.weight.T, dim=-1)
    torch.testing.assert_close(log_probas, expected)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_initial_states_are_zero_with_the_right_shape():
    model = small_model(num_layers=3)
    h, c = model.initial_states(4)
    assert h.shape == c.shape == (3, 4, 10) and not h.any() and not c.any()
    assert h.dtype == torch.float32


@pytest.mark.parametrize("seed", range(4))
def test_loss_matches_the_specification_formula(seed):
    g = torch.Generator().manual_seed(seed)
    batch, seq, vocab = 4, 9, 13
    log_probas = torch.log_softmax(torch.randn(batch, seq, vocab, generator=g), -1)
    targets = torch.randint(0, vocab, (batch, seq), generator=g)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None] < lengths[:, None]).float()
    model = small_model(vocabulary_size=vocab)
    torch.testing.assert_close(model.loss(log_probas, targets, mask), reference_loss(log_probas, targets, mask))


def test_loss_weights_sequences_equally_not_tokens():
    log_probas = torch.log(torch.full((2, 4, 2), 0.5))
    log_probas[0, :, 0] = 0.0  # sequence 0 predicts target 0 with certainty
    targets = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    loss = small_model(vocabulary_size=2).loss(log_probas, targets, mask)
    torch.testing.assert_close(loss, torch.tensor(np.log(2) / 2, dtype=torch.float32))


def test_loss_with_fully_masked_sequences_is_finite():
    model = small_model()
    log_probas = torch.log_softmax(torch.randn(3, 5, 50, requires_grad=True), -1)
    targets = torch.randint(0, 50, (3, 5))
    mask = torch.zeros(3, 5)
    mask[1, :2] = 1
    loss = model.loss(log_probas, targets, mask)
    torch.testing.assert_close(loss, reference_loss(log_probas, targets, mask))
    empty = model.loss(log_probas, targets, torch.zeros(3, 5))
    assert torch.isfinite(empty) and empty.item() == 0.0
    empty.backward()  # still differentiable


def test_token_nll_equals_gathered_log_probabilities():
    model = small_model()
    inputs, targets = torch.randint(0, 50, (3, 6)), torch.randint(0, 50, (3, 6))
    state = model.initial_states(3)
    log_probas, _ = model(inputs, state)
    features, _ = model.hidden_features(inputs, state)
    expected = -log_probas.gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(token_nll(model, features, targets), expected, atol=1e-5, rtol=1e-5)
    mask = torch.ones(3, 6)
    torch.testing.assert_close(masked_sequence_mean(token_nll(model, features, targets), mask),
                               model.loss(log_probas, targets, mask), atol=1e-5, rtol=1e-5)


def test_frozen_embeddings_get_no_gradient_and_learned_ones_do():
    for learn in (False, True):
        model = small_model(learn_embeddings=learn)
        log_probas, _ = model(torch.randint(1, 50, (2, 5)), model.initial_states(2))
        model.loss(log_probas, torch.randint(0, 50, (2, 5)), torch.ones(2, 5)).backward()
        assert (model.embedding.weight.grad is not None) == learn
        assert model.lstm.weight_ih_l0.grad is not None


def test_load_embeddings_from_npz(tmp_path):
    weight = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    path = tmp_path / "embeddings.npz"
    np.savez(path, tokens=weight)
    model = LSTM.load_embeddings_from(path, hidden_size=8, num_layers=2)
    assert model.vocabulary_size == 30 and model.embedding_size == 6 and model.num_layers == 2
    assert torch.equal(model.embedding.weight.detach(), torch.from_numpy(weight))
    assert not model.embedding.weight.requires_grad
    with pytest.raises(FileNotFoundError, match="embeddings file not found"):
        LSTM.load_embeddings_from(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", other=weight)
    with pytest.raises(ValueError, match="tokens"):
        LSTM.load_embeddings_from(tmp_path / "bad.npz")


def test_lstm_learns_a_repeating_sequence():
    torch.manual_seed(0)
    model = small_model(learn_embeddings=True)
    inputs = torch.arange(1, 21).remainder(5).add(1).view(1, 20).repeat(4, 1)
    source, target, mask = inputs[:, :-1], inputs[:, 1:], torch.ones(4, 19)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        log_probas, _ = model(source, model.initial_states(4))
        loss = model.loss(log_probas, target, mask)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.1 * losses[0]
