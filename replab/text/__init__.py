"""Text: GPT-1's byte-pair encoding with the course's token ids (``bpe``)."""

from replab.text.bpe import GPT1Tokenizer, pre_tokenize

__all__ = ["GPT1Tokenizer", "pre_tokenize"]
