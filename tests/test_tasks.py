"""The task objects' training objectives against the specification's straightforward path."""

import pytest
import torch

from replab.models.lstm import LSTM


@pytest.mark.parametrize("batch, length", [(3, 7), (4, 16)])
def test_language_model_objective_with_padding_equals_spec_forward_and_loss(batch, length):
    torch.manual_seed(batch)
    model = LSTM(vocabulary_size=60, embedding_size=12, hidden_size=10, num_layers=2, learn_embeddings=True)
    source = torch.randint(1, 60, (batch, length))
    target = torch.randint(1, 60, (batch, length))
    mask = torch.ones(batch, length)
    mask[0, length // 2 :] = 0  # a padded tail
    mask[-1, 1:] = 0  # a single prediction
    source, target = source * mask.long(), target * mask.long()

    log_probas, _ = model(source, model.initial_states(batch))
    expected = model.loss(log_probas, target, mask)
    expected_grads = torch.autograd.grad(expected, [p for p in model.parameters() if p.requires_grad])

    loss, nll = model(source, targets=target, mask=mask)  # the training path: forward with targets
    assert torch.all(nll[mask == 0] == 0) and not nll.requires_grad
    torch.testing.assert_close(nll * mask, -log_probas.gather(-1, target[..., None]).squeeze(-1) * mask)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_lstm_embeddings_default_to_the_data_folders_file(tmp_path, data_root, caplog):
    from replab.experiments import RunSettings, get_experiment
    from replab.runlog import RunDir
    from replab.tasks import LanguageModelingTask

    data = tmp_path / "data"
    data.mkdir()
    (data / "wikitext2").symlink_to((data_root / "wikitext2").resolve())
    experiment = get_experiment("lstm-1")

    def chosen(**settings):
        settings = RunSettings(out=str(tmp_path / "runs"), **settings)
        return LanguageModelingTask(experiment, settings, data, torch.device("cpu")).embeddings_file

    assert chosen() is None
    assert "not the specification's model" in caplog.text and "replab data download --embeddings" in caplog.text
    (data / "embeddings.npz").write_bytes(b"")  # only its presence is looked at here
    assert chosen() == str(data / "embeddings.npz")
    other = tmp_path / "other.npz"
    other.write_bytes(b"")
    assert chosen(embeddings="none") is None and chosen(embeddings=str(other)) == str(other)
    with pytest.raises(FileNotFoundError, match="embeddings file not found: .*missing.npz"):
        chosen(embeddings=str(tmp_path / "missing.npz"))
    # a resumed run keeps what it started with, even where the data folder has changed since
    assert chosen(resume=True) == str(data / "embeddings.npz")  # nothing recorded yet: the default
    RunDir(tmp_path / "runs" / "lstm-1").write_config({"task": {"embeddings_file": None}})
    assert chosen(resume=True) is None
    RunDir(tmp_path / "runs" / "lstm-1").write_config({"task": {"embeddings_file": str(tmp_path / "gone.npz")}})
    with pytest.raises(FileNotFoundError, match="gone.npz"):
        chosen(resume=True)
