"""The LSTM language model: structure, parameter counts, log-probabilities and the specification's loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replab.models.lstm import (
    LSTM,
    fused_linear_weighted_nll,
    masked_sequence_mean,
    sequence_mean_weights,
)


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


# --------------------------------------- output projection, log-softmax and loss fused: gradients in the forward pass
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 2)])
@pytest.mark.parametrize("seed", range(4))
def test_sequence_mean_weights_give_masked_sequence_mean(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    mask = (torch.rand(shape, generator=generator) < 0.6).float()
    weights = sequence_mean_weights(mask)
    assert torch.all(weights[mask == 0] == 0) and torch.all(weights[mask == 1] > 0)
    torch.testing.assert_close((values * weights).sum(), masked_sequence_mean(values, mask))
    assert (values * sequence_mean_weights(torch.zeros(shape))).sum().item() == 0.0


def weighted_reference(x, w, t, row_weights):
    nll = -torch.log_softmax(x @ w.T, -1).gather(1, t[:, None]).squeeze(1)
    return (nll * row_weights).sum(), nll


@pytest.mark.parametrize("chunk_rows", [None, 1, 3, 1000])
@pytest.mark.parametrize("need", ["both", "features", "weight"])
def test_weighted_nll_equals_autograd_values_and_gradients(chunk_rows, need):
    torch.manual_seed(7)
    x = torch.randn(13, 8, requires_grad=need in ("both", "features"))
    w = torch.randn(40, 8, requires_grad=need in ("both", "weight"))
    t = torch.randint(0, 40, (13,))
    row_weights = torch.rand(13)
    row_weights[[2, 3, 11]] = 0  # skipped rows: NLL 0, no gradient
    expected_loss, expected_nll = weighted_reference(x, w, t, row_weights)
    loss, nll = fused_linear_weighted_nll(x, w, t, row_weights, chunk_rows)
    assert loss.shape == () and loss.dtype == torch.float32 and not nll.requires_grad
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nll, expected_nll.detach() * (row_weights != 0), atol=1e-5, rtol=1e-5)
    inputs = [p for p in (x, w) if p.requires_grad]
    for got, want in zip(torch.autograd.grad(2.5 * loss, inputs), torch.autograd.grad(2.5 * expected_loss, inputs),
                         strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 2, 5])
def test_forward_with_targets_equals_forward_and_loss_values_and_gradients(learn, chunk_rows, monkeypatch):
    """The training path (forward with targets, through ``fused_linear_weighted_nll``) against the spec's path
    (forward -> loss), every learnable parameter's gradient, with padded and empty sequences."""
    import replab.models.lstm as lstm

    if chunk_rows:
        monkeypatch.setattr(lstm, "_chunk_rows", lambda *args: chunk_rows)
    torch.manual_seed(8)
    model = small_model(learn_embeddings=learn)
    inputs, targets = torch.randint(0, 50, (4, 7)), torch.randint(0, 50, (4, 7))
    mask = torch.ones(4, 7)
    mask[0, 3:] = 0
    mask[2] = 0
    params = [p for p in model.parameters() if p.requires_grad]
    log_probas, _ = model(inputs)
    expected = model.loss(log_probas, targets, mask)
    loss, _ = model(inputs, targets=targets, mask=mask)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_weighted_nll_in_float64_and_without_gradients():
    x, w = torch.randn(5, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    t, row_weights = torch.randint(0, 9, (5,)), torch.rand(5, dtype=torch.float64)
    with torch.no_grad():
        loss, nll = fused_linear_weighted_nll(x, w, t, row_weights, chunk_rows=2)
    expected_loss, expected_nll = weighted_reference(x, w, t, row_weights)
    torch.testing.assert_close(nll, expected_nll.float())
    torch.testing.assert_close(loss, expected_loss.float())
    x.requires_grad_()
    (grad,) = torch.autograd.grad(fused_linear_weighted_nll(x, w, t, row_weights)[0], [x])
    assert grad.dtype == torch.float64
    torch.testing.assert_close(grad, torch.autograd.grad(weighted_reference(x, w, t, row_weights)[0], [x])[0])


@pytest.mark.parametrize("gap", [50.0, 80.0, 120.0, 500.0])
def test_weighted_nll_is_exact_when_the_target_probability_underflows(gap):
    """Targets far below the best logit (softmax underflows to 0 in float32) still get the exact, finite NLL."""
    far = torch.eye(4, 6, requires_grad=True)
    wide = torch.zeros(7, 6)
    wide[0, :4] = gap  # every row's logit of token 0 is `gap` above the others
    t = torch.tensor([3, 0, 5, 6])
    loss, nll = fused_linear_weighted_nll(far, wide, t, torch.ones(4), chunk_rows=3)
    expected_loss, expected_nll = weighted_reference(far, wide, t, torch.ones(4))
    assert torch.isfinite(nll).all()
    torch.testing.assert_close(nll, expected_nll.detach())
    torch.testing.assert_close(torch.autograd.grad(loss, [far])[0], torch.autograd.grad(expected_loss, [far])[0])


def test_weighted_nll_bf16_autocast_close_to_the_autocast_reference():
    torch.manual_seed(9)
    x = torch.randn(37, 24, requires_grad=True)
    w = torch.randn(300, 24, requires_grad=True)
    t, row_weights = torch.randint(0, 300, (37,)), torch.rand(37)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = -torch.log_softmax(F.linear(x, w).float(), -1).gather(1, t[:, None]).squeeze(1)
        expected = (nll * row_weights).sum()
        loss, got_nll = fused_linear_weighted_nll(x, w, t, row_weights, chunk_rows=8)
    torch.testing.assert_close(got_nll, nll.detach(), atol=1e-5, rtol=1e-5)  # same bf16 logits, float32 softmax
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(loss, [x, w]), torch.autograd.grad(expected, [x, w]), strict=True):
        torch.testing.assert_close(a, b, atol=0.05 * b.abs().max().item(), rtol=0.02)



@pytest.mark.parametrize("loss_scale", [1.0, 2.0**15, 2.0**16])  # 2**16: a GradScaler's first scale
def test_weighted_nll_fp16_autocast_keeps_the_small_gradients_loss_scaling_would(loss_scale):
    """fp16 (a T4's --amp fp16): the logits' gradients (softmax - onehot) * row weight are ~1e-9 here (1/4096 per
    row, 4096 words), below float16's range; the gradients must still match float32's as closely as a float16
    ``nn.Linear`` + log-softmax under the same loss scale does, and stay finite."""
    torch.manual_seed(10)
    x = torch.randn(64, 32, requires_grad=True)
    w = (0.05 * torch.randn(4096, 32)).requires_grad_()
    t, row_weights = torch.randint(0, 4096, (64,)), torch.full((64,), 1 / 4096)
    exact = torch.autograd.grad(fused_linear_weighted_nll(x, w, t, row_weights)[0], [x, w])
    with torch.autocast("cpu", dtype=torch.float16):
        loss, _ = fused_linear_weighted_nll(x, w, t, row_weights, chunk_rows=16)
        logits = F.linear(x, w)
    reference = (-torch.log_softmax(logits.float(), -1).gather(1, t[:, None]).squeeze(1) * row_weights).sum()
    got = torch.autograd.grad(loss * loss_scale, [x, w])
    unfused = torch.autograd.grad(reference * min(loss_scale, 2.0**15), [x, w])  # 2**16 overflows it: its scaler halves
    for g, u, e in zip(got, unfused, exact, strict=True):
        assert torch.isfinite(g).all()
        error = ((g / loss_scale - e).norm() / e.norm()).item()
        assert error <= max(2 * ((u / min(loss_scale, 2.0**15) - e).norm() / e.norm()).item(), 1e-3)


def test_no_gradient_work_under_no_grad_even_for_parameters_that_require_grad(monkeypatch):
    """Evaluation (``torch.no_grad()``) of a model whose tied embeddings are learned: only the NLL is computed,
    not the (softmax - onehot) gradient terms nor their matrix products; with grad mode on, they are."""
    import replab.models.lstm as lstm

    calls = []
    original = lstm._softmax_minus_onehot
    monkeypatch.setattr(lstm, "_softmax_minus_onehot", lambda *a, **k: calls.append(1) or original(*a, **k))
    x, w = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    t = torch.randint(0, 9, (6,))

    def run():
        return fused_linear_weighted_nll(x, w, t, torch.full((6,), 1 / 6), chunk_rows=4)[1]

    with torch.no_grad():
        nll = run()
    assert calls == [] and not nll.requires_grad
    torch.testing.assert_close(nll, weighted_reference(x, w, t, torch.ones(6))[1].detach())
    run()
    assert len(calls) == 2  # one per chunk of 4 rows


def test_weighted_nll_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        fused_linear_weighted_nll(torch.randn(3, 4), torch.randn(5, 6), torch.zeros(3, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="row_weights"):
        fused_linear_weighted_nll(torch.randn(3, 4), torch.randn(5, 4), torch.zeros(3, dtype=torch.long), torch.ones(2))


def test_the_classifier_layers_are_named_and_old_state_dicts_load():
    model = small_model()
    assert model.classifier.hidden is model.classifier[0] and model.classifier.relu is model.classifier[1]
    assert model.classifier.output is model.classifier[2] and model.classifier.output.weight is model.embedding.weight
    assert {"classifier.hidden.weight", "classifier.hidden.bias", "classifier.output.weight"} <= set(
        model.state_dict())
    # a checkpoint written while the classifier was an unnamed nn.Sequential (classifier.0 / classifier.2)
    old = {k.replace("classifier.hidden.", "classifier.0.").replace("classifier.output.", "classifier.2."): v
           for k, v in small_model().state_dict().items()}
    assert {"classifier.0.weight", "classifier.0.bias", "classifier.2.weight"} <= set(old)
    model.load_state_dict(old)  # strict
    for name, value in model.state_dict().items():
        new_name = name.replace("classifier.hidden.", "classifier.0.").replace("classifier.output.", "classifier.2.")
        assert torch.equal(value, old[new_name])
    assert model.classifier.output.weight is model.embedding.weight  # still tied after loading


def test_forward_with_targets_is_the_loss_and_the_nll_of_forward():
    model = small_model(learn_embeddings=True)
    inputs, targets = torch.randint(1, 50, (3, 6)), torch.randint(1, 50, (3, 6))
    mask = torch.ones(3, 6)
    mask[1, 4:] = 0
    log_probas, _ = model(inputs, model.initial_states(3))
    expected = -log_probas.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    loss, nll = model(inputs, targets=targets, mask=mask)
    torch.testing.assert_close(nll, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, model.loss(log_probas, targets, mask))
    unmasked, _ = model(inputs, targets=targets)  # no mask: every position counts
    torch.testing.assert_close(unmasked, model.loss(log_probas, targets, torch.ones(3, 6)))


def test_forward_with_targets_and_every_position_masked_is_zero_and_differentiable():
    model = small_model(learn_embeddings=True)
    inputs, targets = torch.randint(1, 50, (2, 3)), torch.randint(1, 50, (2, 3))
    loss, nll = model(inputs, targets=targets, mask=torch.zeros(2, 3))
    assert loss.item() == 0.0 and torch.equal(nll, torch.zeros(2, 3))
    loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters() if p.requires_grad)
