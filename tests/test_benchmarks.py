"""Smoke tests of the benchmarks: each runs in its --quick setting and writes valid JSON. No timing asserts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import BENCHMARKS, cifar_pipeline, common, lstm_step, vit_step
from replab.models.vit import VisionTransformer


def _read(path):
    with open(path) as handle:
        return json.load(handle)  # strict JSON: NaN/Infinity would raise


def _check_common(payload, name):
    assert payload["benchmark"] == name
    machine = payload["machine"]
    for key in ("torch", "device", "cpu", "torch_threads", "load_average_start", "load_average_end"):
        assert key in machine
    assert payload["settings"]["quick"] is True
    assert payload["targets"] and all(t["status"] in ("met", "NOT met", "not measured") for t in payload["targets"])


def test_vit_step_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "vit.json"
    assert vit_step.main(["--quick", "--out", str(out), "--force-bf16"]) == 0
    payload = _read(out)
    _check_common(payload, "vit_step")
    assert payload["parameters"]["replab"] == payload["parameters"]["reference"]
    assert payload["reference_max_logit_difference"] < 1e-4
    for mode in ("fp32", "bf16"):
        entry = payload["results"][mode]
        assert entry["status"] == "ok", entry
        assert entry["images_per_s"]["replab"] > 0 and entry["images_per_s"]["reference"] > 0
        assert entry["ratio_replab_over_reference"] > 0 and entry["gemm_peak_flops_per_s"] > 0
        assert len(entry["timings"]["replab"]["rounds_s"]) == payload["settings"]["repeats"] == 2
    assert set(payload["recommended_default"]) == {"fp32", "bf16"}
    printed = capsys.readouterr().out
    assert "target" in printed and ("met" in printed or "NOT met" in printed)


def test_vit_step_reports_a_compile_failure_instead_of_crashing(tmp_path, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    out = tmp_path / "vit.json"
    assert vit_step.main(["--quick", "--modes", "fp32,fp32-compile", "--out", str(out)]) == 0
    payload = _read(out)
    failed = payload["results"]["fp32-compile"]["status"]
    assert failed.startswith("failed") and "no compiler here" in failed and "second line" not in failed
    assert payload["results"]["fp32"]["status"] == "ok"
    assert payload["recommended_default"]["fp32"]["mode"] == "fp32"


def test_vit_step_compiled_mode_runs_or_reports(tmp_path):
    """Where inductor works the compiled mode is timed; where it does not, the failure is recorded."""
    out = tmp_path / "vit.json"
    assert vit_step.main(["--quick", "--modes", "fp32-compile", "--out", str(out)]) == 0
    status = _read(out)["results"]["fp32-compile"]["status"]
    assert status == "ok" or status.startswith("failed")


def test_vit_flop_count_of_the_spec_model():
    config = VisionTransformer(num_layers=6).config
    forward = vit_step.forward_flops(config, batch_size=1)
    t, e, hd = 65, 256, 512
    per_block = 2 * t * e * (3 * e) + 4 * t * t * e + 2 * t * e * e + 4 * t * e * hd
    assert forward["blocks"] == 6 * per_block
    assert forward["patch_embedding"] == 2 * 64 * 48 * 256
    assert vit_step.training_flops(config, 128) == 128 * (2 * forward["patch_embedding"]
                                                          + 3 * (6 * per_block + forward["head"]))


def test_model_products_are_the_counted_flops():
    config = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2).config
    products = vit_step.ModelProducts(config, 3, torch.device("cpu"), torch.float32)
    assert products.flops == vit_step.training_flops(config, 3)
    products()


def test_reference_vit_is_the_same_network():
    torch.manual_seed(0)
    ours = VisionTransformer(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2)
    reference = vit_step.ReferenceViT(32, 64, 3, 4, 2)
    assert vit_step.count_parameters(ours) == vit_step.count_parameters(reference)
    assert vit_step.check_reference(ours, reference, torch.device("cpu")) < 1e-5
    assert vit_step.count_parameters(vit_step.ReferenceViT()) == 3_195_146


def test_lstm_step_quick_writes_json(tmp_path):
    out = tmp_path / "lstm.json"
    assert lstm_step.main(["--quick", "--out", str(out), "--modes", "fp32", "--padding", "0.25"]) == 0
    payload = _read(out)
    _check_common(payload, "lstm_step")
    entry = payload["results"]["fp32"]
    assert entry["status"] == "ok"
    assert entry["loss"]["abs_difference"] < 1e-4
    assert entry["tokens_per_s"]["replab"] > 0 and entry["ratio_replab_over_reference"] > 0
    assert payload["targets"][0]["target"] == 1.3


def test_lstm_step_bf16_is_measured_skipped_or_reported_failed(tmp_path):
    out = tmp_path / "lstm.json"
    assert lstm_step.main(["--quick", "--out", str(out), "--modes", "bf16"]) == 0
    status = _read(out)["results"]["bf16"]["status"]
    assert status == "ok" or status.startswith(("skipped", "failed"))


def test_lstm_step_profile_splits_the_step_into_matrix_products_and_the_rest(tmp_path, capsys):
    out = tmp_path / "lstm.json"
    assert lstm_step.main(["--quick", "--out", str(out), "--modes", "fp32", "--profile", "--learn-embeddings"]) == 0
    profile = _read(out)["results"]["fp32"]["profile"]
    assert profile["step_s"] > 0 and profile["top"]
    assert math.isclose(profile["matrix_products_s"] + profile["other_s"], profile["self_s"], rel_tol=1e-9)
    assert any(row["op"] in lstm_step.MATRIX_PRODUCTS for row in profile["top"])
    assert "profile of one replab step" in capsys.readouterr().out


def test_lstm_step_targets_name_the_bf16_bound_and_speed_up():
    entry = {"status": "ok", "ratio_replab_over_reference": 1.5, "fraction_of_gemm_bound": {"replab": 0.55}}
    targets = {t["name"]: t for t in lstm_step._targets(["fp32", "bf16"], {"fp32": entry, "bf16": entry}, 2.6)}
    assert targets["bf16 fraction of the bf16 matrix-product bound"]["status"] == "met"
    assert targets["bf16 step speed-up over fp32 (no target set)"]["value"] == 2.6
    slow = {**entry, "fraction_of_gemm_bound": {"replab": 0.4}}
    targets = {t["name"]: t for t in lstm_step._targets(["bf16"], {"bf16": slow}, None)}
    assert targets["bf16 fraction of the bf16 matrix-product bound"]["status"] == "NOT met"


def test_lstm_flops_counts_the_frozen_projection_twice():
    from replab.models.lstm import LSTM

    model = LSTM(vocabulary_size=100, embedding_size=8, hidden_size=4)
    per_token = 3 * (2 * 4 * 4 * (8 + 4) + 2 * 4 * 8) + 2 * 2 * 8 * 100
    assert lstm_step.training_flops(model, 10) == 10 * per_token


def test_cifar_pipeline_quick_writes_json(tmp_path):
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = tmp_path / "cifar.json"
        assert cifar_pipeline.main(["--quick", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 2  # --quick measured on one thread, then gave the caller its two back
    finally:
        torch.set_num_threads(caller_threads)
    payload = _read(out)
    assert payload["machine"]["torch_threads"] == 1
    _check_common(payload, "cifar_pipeline")
    results = payload["results"]
    assert results["images_per_s"]["replab"] > 0 and results["images_per_s"]["reference"] > 0
    assert 0 < results["share_of_vit2_step"]["replab"]
    assert {t["name"] for t in payload["targets"]} == {"ratio replab/reference", "replab pipeline / ViT-2 step"}


def test_pil_reference_crops_like_torchvision():
    import random

    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = cifar_pipeline.random_resized_crop_box(32, 32, rng)
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w
        assert 0.8 * 1024 - 64 <= h * w <= 1024 and 0.8 <= w / h <= 1.25
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    dataset = cifar_pipeline.PILAugmentedImages(images, [1, 2, 3])
    image, label = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 2


def test_python_m_benchmarks_dispatches(tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "lstm.json"
    assert main(["lstm-step", "--quick", "--modes", "fp32", "--out", str(out)]) == 0
    assert _read(out)["benchmark"] == "lstm_step"
    with pytest.raises(SystemExit):
        main(["no_such_benchmark"])
    assert set(BENCHMARKS) == {"vit_step", "lstm_step", "cifar_pipeline"}


def test_interleaved_rotates_the_order_and_times_every_round():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    seconds = common.interleaved(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(v) == 3 and all(s >= 0 for s in v) for v in seconds.values())


def test_pull_drains_prefetched_batches_untimed():
    batches = iter(range(100))
    source = ((torch.zeros(1), n) for n in batches)
    pull = cifar_pipeline.Pull(source, count=3, drain=2)
    calls = []
    seconds = common.interleaved({"pull": pull, "mark": lambda: calls.append(next(batches))}, torch.device("cpu"),
                                 repeats=2, warmup=0)
    assert len(seconds["pull"]) == 2
    # round 1: drain 2 + pull 3 (0..4), mark takes 5; round 2 (rotated): mark takes 6, drain 7, 8, pull 9..11
    assert calls == [5, 6] and next(batches) == 12


def test_gemm_peak_and_helpers(tmp_path):
    peak = common.GemmPeak(torch.device("cpu"), torch.float32, size=64, min_seconds=0.0)
    assert peak.size == 64 and peak.inner == 1 and peak.flops == 2 * 64**3
    peak()
    assert common.status(1.0, 1.0) == "met" and common.status(0.5, 1.0) == "NOT met"
    assert common.status(0.01, 0.05, higher_is_better=False) == "met"
    assert common.status(float("nan"), 1.0) == "not measured"
    assert common.median([3.0, 1.0, float("nan"), 2.0]) == 2.0
    assert math.isnan(common.median([]))
    path = common.write_json(tmp_path / "x.json", {"a": float("inf"), "b": (1, torch.float32)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, "torch.float32"]}
