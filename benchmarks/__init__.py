"""Benchmarks of replab against straightforward PyTorch references, with ratios measured inside one run.

    python -m benchmarks.vit_step        ViT-6 training step: replab vs nn.TransformerEncoderLayer (+ GEMM peak)
    python -m benchmarks.lstm_step       LSTM training step: fused chunked cross-entropy vs full log_softmax
    python -m benchmarks.cifar_pipeline  batched CIFAR-10 augmentation vs per-image PIL in a DataLoader

(also ``python -m benchmarks NAME [options]``; from a checkout: the benchmarks are not installed).
Each prints a table with a target column and writes JSON to
``bench-results/NAME.json`` (``--out`` to change it). ``--quick`` runs a tiny smoke setting.
"""

BENCHMARKS = ("vit_step", "lstm_step", "cifar_pipeline")
