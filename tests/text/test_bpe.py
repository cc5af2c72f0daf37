"""GPT-1 BPE: the vocabulary read from the data folder, pre-tokenization rules, readable decoding, and the round
trip through the course's Wikitext-2 token files."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replab.data.roundtrip import measure
from replab.text import GPT1Tokenizer, pre_tokenize
from replab.text.bpe import PAD_ID, SPACE_CHARACTERS, UNK_ID, vocabulary_files


@pytest.fixture(scope="module")
def tok(gpt1_tokenizer) -> GPT1Tokenizer:
    return gpt1_tokenizer


def pieces(tok, text):
    return tok.tokens(tok.encode(text))


def test_vocabulary_is_read_from_the_data_folder_with_our_ids(tok, data_root):
    encoder_path, merges_path = vocabulary_files(data_root)
    assert encoder_path.parent == data_root / "gpt1-bpe"
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    assert tok.vocabulary_size == len(encoder) + 1 == 40479 and tok.num_merges == 40000
    assert tok.ids[".</w>"] == encoder[".</w>"] + 1 and tok.pieces[UNK_ID] == "<unk>"  # our id = GPT-1 id + 1
    assert GPT1Tokenizer.from_data_dir(data_root) is tok  # loaded once per folder


def test_a_missing_vocabulary_names_the_command_that_gets_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing encoder_bpe_40000.json, vocab_40000.bpe.*replab data "
                       r"download --vocabulary"):
        GPT1Tokenizer.from_data_dir(tmp_path)


@pytest.mark.parametrize("encoder, merges, message", [
    ("{not json", "#version: 0.2\nt h\n", "encoder_bpe_40000.json is not JSON"),
    ('["<unk>"]', "#version: 0.2\nt h\n", "must be a JSON object of token -> id"),
    ('{"<unk>": 0, "t": 1}', "t h\n", "must start with a '#version' line"),
    ('{"<unk>": 0, "t": 1}', "#version: 0.2\nt h\nx y z\n", "line 3 is not a pair"),
    ('{"a": 0, "<unk>": 1}', "#version: 0.2\nt h\n", "must hold <unk> as GPT-1 id 0"),
])
def test_a_damaged_vocabulary_is_an_error_naming_the_problem(tmp_path, encoder, merges, message):
    folder = tmp_path / "gpt1-bpe"
    folder.mkdir()
    (folder / "encoder_bpe_40000.json").write_text(encoder)
    (folder / "vocab_40000.bpe").write_text(merges)
    with pytest.raises(ValueError, match=message):
        GPT1Tokenizer.from_data_dir(tmp_path)


def test_words_are_lower_cased_split_on_punctuation_and_end_with_a_marker(tok):
    assert pieces(tok, "Hello, World!") == ["hello</w>", ",</w>", "world</w>", "!</w>"]
    assert pieces(tok, "state-of-the-art") == pieces(tok, "state - of - the - art")
    assert tok.encode("one\ttwo\n three\u00a0four") == tok.encode("one two three four")


def test_accents_are_stripped_and_control_characters_dropped(tok):
    assert tok.encode("Café Zürich") == tok.encode("cafe zurich")
    assert tok.encode("a\u200bb\x00c") == tok.encode("abc")  # zero-width space (Cf) and NUL dropped


def test_space_characters_are_tab_newline_return_and_the_unicode_space_separators():
    separators = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"}
    assert set(SPACE_CHARACTERS) == separators | set("\t\n\r")
    assert pre_tokenize("a\u2003b\x0bc\u2028d") == ["a", "bc\u2028d"]  # \x0b is a control character: dropped


def test_cjk_ideographs_are_words_of_their_own():
    assert pre_tokenize("東京tower") == ["東", "京", "tower"]


def test_rare_words_merge_into_several_pieces(tok):
    word = pieces(tok, "gammarus")
    assert len(word) > 1 and word[-1].endswith("</w>") and not any(p.endswith("</w>") for p in word[:-1])
    assert "".join(word).replace("</w>", "") == "gammarus"


def test_characters_outside_the_vocabulary_become_unk(tok):
    assert tok.encode("–") == [UNK_ID]  # an en dash: not in GPT-1's vocabulary
    assert tok.tokens(tok.encode("ti<unk>kal")) == ["ti", "<unk>", "kal</w>"]  # <unk> is a character of its word
    assert tok.encode("5 <unk> 6") == tok.encode("5 <unk>6")


def test_decode_reads_like_prose_and_encodes_back(tok):
    ids = tok.encode("the lobster ( 24 in ) , weighing 5 <unk> 6 kg , costs $ 5 @-@ 6")
    text = tok.decode(ids)
    assert text == "the lobster (24 in), weighing 5 <unk> 6 kg, costs $5 @-@ 6"
    assert tok.encode(text) == ids
    inside = tok.encode("ti<unk>kal")
    assert tok.decode(inside) == "ti<unk>kal" and tok.encode(tok.decode(inside)) == inside
    assert tok.decode([PAD_ID, *tok.encode("hi"), PAD_ID]) == "hi"  # padding is skipped
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([40479])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
       | st.lists(st.sampled_from(["the", "lobster", ",", "(", ")", "$", "@-@", "<unk>", "–", "é", "東", " ", "x"]))
       .map("".join))
def test_decoded_text_encodes_to_the_same_ids(tok, text):
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids)) == ids


def test_every_line_of_the_validation_split_comes_back(tok, data_root):
    """Measured on all three splits (README): 100% of lines and tokens come back identical."""
    with np.load(data_root / "wikitext2" / "wiki.validation.npz") as data:
        result = measure(tok, data["tokens"].astype(np.int64), data["sizes"], "validation")
    assert result.lines == 2461 and result.tokens == 245_046
    assert result.different == [] and result.identical_lines == result.lines
    assert result.identical_tokens == result.tokens


def test_measure_counts_lines_that_do_not_come_back(tok):
    ids = tok.encode("the lobster")
    accented = [tok.ids["caf"], tok.ids["é</w>"]]  # in GPT-1's vocabulary, but encode strips accents: "cafe"
    tokens = np.array(ids + accented + ids, dtype=np.int64)
    result = measure(tok, tokens, np.array([len(ids), 0, 2, len(ids)]))
    assert (result.lines, result.identical_lines, result.tokens, result.identical_tokens) == (3, 2, 6, 4)
    assert result.different == [1]
