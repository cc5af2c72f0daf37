"""Datasets of the study: Wikitext-2 (GPT-1 token ids) and CIFAR-10, kept as whole tensors."""
