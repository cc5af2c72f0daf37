"""GPT-1 vocabulary download against a local server holding the real vocabulary files."""

from __future__ import annotations

import json

import pytest

from replab.cli import main
from replab.data.vocabulary import check_vocabulary, download_vocabulary
from tests.data.local_server import serve

FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")


@pytest.fixture
def server(tmp_path, data_root):
    """(base URL, www folder, request log, paths to fail with a 503 once, paths to cut short once)."""
    www = tmp_path / "www"
    www.mkdir()
    for name in FILES:
        (www / name).write_bytes((data_root / "gpt1-bpe" / name).read_bytes())
    with serve(www) as local:
        yield local.base, www, local.requests, local.fail_once, local.cut_once


def test_download_writes_both_files_byte_for_byte_and_then_asks_nothing(tmp_path, server, data_root):
    base, _, requests, fail_once, cut_once = server
    fail_once.add("/encoder_bpe_40000.json")
    cut_once.add("/vocab_40000.bpe")  # a body shorter than its Content-Length is retried, not taken
    folder = download_vocabulary(tmp_path / "data", url=base, wait=0.01)
    assert folder == tmp_path / "data" / "gpt1-bpe"
    for name in FILES:
        assert (folder / name).read_bytes() == (data_root / "gpt1-bpe" / name).read_bytes()
    assert requests.count("/encoder_bpe_40000.json") == 2 and requests.count("/vocab_40000.bpe") == 2
    sources = json.loads((folder / "sources.json").read_text())
    assert sources["source"] == base and set(sources["sha256"]) == set(FILES)
    tokenizer = check_vocabulary(tmp_path / "data")
    assert tokenizer.encode("the lobster") and tokenizer.vocabulary_size == 40479
    requests.clear()
    assert download_vocabulary(tmp_path / "data", url=base) == folder and requests == []  # present: no network


@pytest.mark.parametrize("damage, message", [
    (lambda text: text.rsplit("\n", 100)[0] + "\n", "39,901 merges, expected 40,478 and 40,000"),  # 99 merges cut
    (lambda text: "#version: 0.2\nonly\n", "line 2 is not a pair"),
])
def test_a_wrong_vocabulary_is_refused_and_nothing_is_written(tmp_path, server, damage, message):
    base, www, *_ = server
    merges = www / "vocab_40000.bpe"
    merges.write_text(damage(merges.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ValueError, match=f"refusing the vocabulary at {base}.*{message}"):
        download_vocabulary(tmp_path / "data", url=base, wait=0.01)
    assert not (tmp_path / "data").exists()


def test_a_missing_file_is_a_404_error_not_retried(tmp_path, server):
    base, www, requests, *_ = server
    (www / "vocab_40000.bpe").unlink()
    with pytest.raises(ConnectionError, match="HTTP 404"):
        download_vocabulary(tmp_path / "data", url=base, wait=0.01)
    assert requests.count("/vocab_40000.bpe") == 1 and not (tmp_path / "data").exists()


def test_cli_download_then_check(tmp_path, server, capsys):
    base = server[0]
    data = tmp_path / "data"
    assert main(["data", "check", "--data-dir", str(data)]) == 2  # nothing there yet
    assert "vocabulary absent" in capsys.readouterr().out
    assert main(["data", "download", "--vocabulary", "--gpt1-url", base, "--data-dir", str(data)]) == 2
    out = capsys.readouterr().out  # the vocabulary is there now; the datasets are still missing
    assert f"GPT-1 vocabulary: {data / 'gpt1-bpe'}" in out
    assert "vocabulary ok: 40,478 GPT-1 tokens, 40,000 merges (gpt1-bpe/)" in out and "MISSING" in out
    (data / "gpt1-bpe" / "vocab_40000.bpe").write_text("#version: 0.2\nt h\n")
    assert main(["data", "check", "--data-dir", str(data)]) == 2
    assert "vocabulary DAMAGED" in capsys.readouterr().out
