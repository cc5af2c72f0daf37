"""GPT-1 embeddings download against a local server with synthetic shards laid out like the published ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replab.cli import main
from replab.data.embeddings import check_embeddings, download_embeddings
from replab.runlog import RunDir
from tests.data.local_server import serve

SHAPES = Path(__file__).parents[1] / "text" / "data" / "params_shapes.json"  # GPT-1's real params_shapes.json
NEEDED = 3  # shards that hold the token embeddings (elements 393,216 .. 31,480,320 of 116,534,784)


def shard_sizes() -> list[int]:
    """GPT-1's 10 shards: every parameter concatenated, then cut as ``np.array_split`` cuts."""
    total = sum(int(np.prod(shape)) for shape in json.loads(SHAPES.read_text()))
    return [len(part) for part in np.array_split(np.empty(total, dtype=np.uint8), 10)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A folder with params_shapes.json and the first three synthetic shards (random float32), and the token
    embedding block they hold (40,478 x 768), sliced from their concatenation as GPT-1's loader does."""
    www = tmp_path_factory.mktemp("www")
    (www / "params_shapes.json").write_bytes(SHAPES.read_bytes())
    rng = np.random.default_rng(0)
    shards = [rng.standard_normal(size, dtype=np.float32) for size in shard_sizes()[:NEEDED]]
    for i, shard in enumerate(shards):
        np.save(www / f"params_{i}.npy", shard)
    shapes = json.loads(SHAPES.read_text())
    arrays = np.split(np.concatenate(shards), np.cumsum([int(np.prod(s)) for s in shapes[:2]]))
    return www, arrays[1].reshape(shapes[1])


@pytest.fixture
def server(weights):
    """(base URL, www folder, request log, paths to fail once with a 503, the expected token block)."""
    www, expected = weights
    with serve(www) as local:
        yield local.base, www, local.requests, local.fail_once, expected


def test_shapes_file_is_gpt1s_layout():
    shapes = json.loads(SHAPES.read_text())
    assert shapes[0] == [512, 768] and shapes[1] == [40478, 768] and len(shapes) == 2 + 12 * 12
    assert sum(shard_sizes()[:2]) < 512 * 768 + 40478 * 768 <= sum(shard_sizes()[:3])


def test_download_writes_the_token_block_with_a_padding_row(tmp_path, server):
    base, _, requests, fail_once, expected = server
    fail_once.update({"/params_shapes.json", "/params_1.npy"})  # each retried once
    path = download_embeddings(tmp_path, url=base, wait=0.01, progress=False)
    with np.load(path) as archive:
        tokens = archive["tokens"]
    assert tokens.shape == (40479, 768) and tokens.dtype == np.float32
    assert not tokens[0].any()
    np.testing.assert_array_equal(tokens[1:], expected)  # row i + 1 = GPT-1 token i, bit for bit
    assert sorted(set(requests)) == ["/params_0.npy", "/params_1.npy", "/params_2.npy", "/params_shapes.json"]
    assert requests.count("/params_1.npy") == 2 and requests.count("/params_0.npy") == 1
    sources = json.loads((tmp_path / "embeddings.sources.json").read_text())
    assert sources["source"] == base and set(sources["sha256"]) == {f"params_{i}.npy" for i in range(3)} | {
        "params_shapes.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npz", "embeddings.sources.json"]
    assert check_embeddings(path) == (40479, 768)
    requests.clear()
    assert download_embeddings(tmp_path, url=base, progress=False) == path and requests == []  # present: no network


def test_changed_shard_is_refused_after_the_first_download(tmp_path, server):
    base, www, _, _, _ = server
    download_embeddings(tmp_path, url=base, progress=False)
    (tmp_path / "embeddings.npz").unlink()
    original = (www / "params_2.npy").read_bytes()
    try:
        shard = np.load(www / "params_2.npy")
        shard[-1] += 1
        np.save(www / "params_2.npy", shard)
        with pytest.raises(ValueError, match="params_2.npy differs from the first download"):
            download_embeddings(tmp_path, url=base, progress=False)
    finally:
        (www / "params_2.npy").write_bytes(original)
    assert not (tmp_path / "embeddings.npz").exists()


@pytest.mark.parametrize("remove", ["params_1.npy", "params_shapes.json"])
def test_missing_file_is_an_error_and_writes_nothing(tmp_path, server, remove):
    base, www, requests, _, _ = server
    hidden = www / remove
    moved = hidden.rename(www.parent / f"{www.name}-{remove}")
    try:
        with pytest.raises(ConnectionError, match="HTTP 404"):
            download_embeddings(tmp_path / "data", url=base, wait=0.01, progress=False)
    finally:
        moved.rename(hidden)
    assert requests.count(f"/{remove}") == 1  # a 404 is not retried
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_unreachable_server_retries_then_fails(tmp_path):
    with pytest.raises(ConnectionError, match="after 3 attempts"):
        download_embeddings(tmp_path, url="http://127.0.0.1:9", retries=2, wait=0.01, progress=False)
    assert not any(tmp_path.iterdir())


def test_wrong_layout_is_refused(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "params_shapes.json").write_text("[[40478, 768], [512, 768]]")
    with serve(www) as local, pytest.raises(ValueError, match="does not start with GPT-1's position"):
        download_embeddings(tmp_path / "data", url=local.base, progress=False)


def test_cli_download_then_an_lstm_run_uses_them_frozen_and_tied_and_writes(tmp_path, server, data_root, capsys):
    base, www = server[:2]
    for name in ("encoder_bpe_40000.json", "vocab_40000.bpe"):  # GPT-1's vocabulary lies beside its weights
        (www / name).write_bytes((data_root / "gpt1-bpe" / name).read_bytes())
    data = tmp_path / "data"
    data.mkdir()
    for name in ("wikitext2", "cifar10"):
        (data / name).symlink_to((data_root / name).resolve())
    assert main(["data", "download", "--embeddings", "--embeddings-url", base, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "embeddings ok: 40,479 x 768" in out and "vocabulary ok: 40,478 GPT-1 tokens" in out
    argv = ["train", "lstm-1", "--epochs", "1", "--batch-size", "2", "--limit-train-batches", "1",
            "--limit-eval-batches", "1", "--no-progress", "--data-dir", str(data), "--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    config = RunDir(tmp_path / "runs" / "lstm-1").read_config()
    assert config["parameters"] == {"total": 34_107_392, "learnable": 3_019_520}
    assert config["task"]["embeddings"].startswith("pretrained GPT-1 (frozen, tied")
    assert config["task"]["embeddings_file"] == str(data / "embeddings.npz")
    capsys.readouterr()
    texts = []
    for _ in range(2):  # the trained run writes text, the same for the same seed
        assert main(["generate", str(tmp_path / "runs" / "lstm-1"), "--tokens", "10", "--seed", "7",
                     "--data-dir", str(data)]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and len(texts[0].split()) > 10
