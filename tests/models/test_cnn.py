"""CNN baselines: exact sizes, shapes, channels_last, BatchNorm eval semantics, training, the registry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from replab.models.cnn import CNN_MODELS, DenseNet, GoogleNet, ResNet, ResNetPreAct, build_cnn

EXPECTED_PARAMS = {
    "googlenet": 260_650,
    "resnet": 272_378,
    "resnetpreact": 272_250,
    "densenet": 239_146,
}
NAMES = list(CNN_MODELS)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny batches: one intra-op thread is as fast, and avoids 10x slowdowns when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """One instance per model (built once: the tests below that mutate a model build their own)."""
    torch.manual_seed(0)
    return {name: build_cnn(name) for name in NAMES}


def test_registry_names_the_four_classes():
    assert CNN_MODELS == {
        "googlenet": GoogleNet,
        "resnet": ResNet,
        "resnetpreact": ResNetPreAct,
        "densenet": DenseNet,
    }


@pytest.mark.parametrize("name", NAMES)
def test_exact_parameter_count(models, name):
    assert sum(p.numel() for p in models[name].parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_changes_only_the_head(name):
    model = build_cnn(name, num_classes=100)
    n = sum(p.numel() for p in model.parameters())
    in_features = model.fc.in_features
    assert n == EXPECTED_PARAMS[name] + 90 * (in_features + 1)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_output_shape(models, name, batch):
    model = models[name].eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 32, 32))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(1)
    model = build_cnn(name)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.train()(x)  # non-trivial running statistics
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for train in (False, True):  # eval (running stats), then train (batch stats)
            ref, out = model.train(train)(x), model_cl.train(train)(x_cl)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for key, buf in model_cl.named_buffers():  # the train-mode forward updated both models alike
        torch.testing.assert_close(buf, dict(model.named_buffers())[key])


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_uses_running_stats(name):
    torch.manual_seed(2)
    model = build_cnn(name)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 32))  # move the running statistics away from (0, 1)
        model.eval()
        single = model(x[:1])
        batched = model(x)
        again = model(x)
        # in train mode the same image's output depends on the rest of the batch (batch statistics)
        model.train()
        train_single, train_batched = model(x[:1].repeat(2, 1, 1, 1)), model(x)
    torch.testing.assert_close(batched, again, rtol=0, atol=0)
    torch.testing.assert_close(batched[:1], single, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(train_batched[:1], train_single[:1], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_eval_does_not_update_running_stats(name):
    model = build_cnn(name).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_reduce_the_loss(name):
    torch.manual_seed(3)
    model = build_cnn(name).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = model.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_mean_cross_entropy(models, name):
    preds, labels = torch.randn(5, 10), torch.randint(0, 10, (5,))
    torch.testing.assert_close(models[name].loss(preds, labels), F.cross_entropy(preds, labels))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_loss_computes_in_float64_for_float64_logits_and_float32_below(models, dtype):
    preds, labels = torch.randn(5, 10, dtype=torch.float64).to(dtype), torch.randint(0, 10, (5,))
    loss = models["resnet"].loss(preds, labels)
    want = F.cross_entropy(preds.to(torch.promote_types(dtype, torch.float32)), labels)
    assert loss.dtype == want.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(loss, want, atol=0, rtol=0)


def test_float64_model_gives_float64_logits_and_loss():
    model = build_cnn("resnetpreact").double().eval()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (2,))
    logits = model(x)
    assert logits.dtype == model.loss(logits, y).dtype == torch.float64


def test_build_cnn_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown CNN 'vgg'") as info:
        build_cnn("vgg")
    for name in NAMES:
        assert name in str(info.value)
