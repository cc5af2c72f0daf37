"""The registry of experiments and models, and the flat experiment record of config.json (old files included)."""

import json
from pathlib import Path

import pytest

from replab.experiments import EXPERIMENTS, GRIDS, Experiment
from replab.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
# The experiment record of config.json as the code before the per-model configs wrote it: CNNs with num_layers 1.
OLD_CNN_RECORD = {
    "id": "cnn-resnet", "task": "cnn", "optimizer": "momentum", "lr": 0.1, "batch_size": 128, "epochs": 1, "seed": 42,
    "num_layers": 1, "weight_decay": 0.0001, "momentum": 0.9, "lr_milestones": [100, 150], "lr_gamma": 0.1,
    "architecture": "resnet",
}


def test_every_experiment_is_a_registered_model_with_its_config():
    for experiment in EXPERIMENTS.values():
        assert isinstance(experiment.config, MODELS[experiment.model].config)
        experiment.resolved()  # valid
    assert [name for name in GRIDS if name != "all"] == list(MODELS)


def test_the_record_round_trips_through_json():
    for experiment in EXPERIMENTS.values():
        record = json.loads(json.dumps(experiment.resolved().to_dict()))
        assert Experiment.from_dict(record) == experiment.resolved()


def test_a_published_config_json_reads_as_its_registry_experiment():
    config = json.loads((ROOT / "results" / "runs" / "vit-1" / "config.json").read_text())
    expected = EXPERIMENTS["vit-1"].resolved()
    assert json.loads(json.dumps(expected.to_dict())) == config["experiment"]  # the same flat record, key for key
    assert list(expected.to_dict()) == list(config["experiment"])  # in the same order
    assert Experiment.from_dict(config["experiment"]) == expected


def test_an_old_cnn_record_reads_without_its_num_layers():
    experiment = Experiment.from_dict(OLD_CNN_RECORD)
    assert experiment.config.architecture == "resnet" and experiment.lr_milestones == (100, 150)
    assert "num_layers" not in experiment.to_dict()
    assert {k: v for k, v in OLD_CNN_RECORD.items() if k != "num_layers"} == json.loads(
        json.dumps(experiment.to_dict()))


def test_a_bad_model_config_is_named():
    with pytest.raises(ValueError, match="block must be one of prenorm, postnorm"):
        Experiment.from_dict({**EXPERIMENTS["vit-1"].resolved().to_dict(), "block": "sandwich"}).resolved()
    with pytest.raises(ValueError, match="architecture must be one of"):
        Experiment.from_dict({**OLD_CNN_RECORD, "architecture": "vgg"}).resolved()
