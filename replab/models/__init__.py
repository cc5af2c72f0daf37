"""Models of the study: the ViT (from primitives), the LSTM language model and the CNN baselines."""
