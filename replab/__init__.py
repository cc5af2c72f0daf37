"""replab: the LSTM / Vision Transformer study of the specification, built from tensor primitives."""

__version__ = "0.1.0"
