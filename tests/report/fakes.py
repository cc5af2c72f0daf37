"""Fake but schema-exact run folders with known numbers, written through the trainer's own log writer (RunDir)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from replab.experiments import EXPERIMENTS, RunSettings
from replab.runlog import RunDir

PARAMETERS = {"vit": {2: 1_086_730, 4: 2_140_938, 6: 3_195_146}, "lstm": {1: 34_107_392, 2: 36_208_640, 4: 40_411_136},
              "cnn": {"googlenet": 260_650, "resnet": 272_378, "resnetpreact": 272_250, "densenet": 239_146}}
ENVIRONMENT = {"replab_version": "0.1.0", "git_commit": "0123456789abcdef0123456789abcdef01234567", "python": "3.11.7",
               "torch": "2.13.0", "platform": "Linux", "cpu": "Test CPU", "cpu_threads": 2, "device": "cpu",
               "device_name": "Test CPU", "cuda": None, "cudnn": None, "hostname": "test"}


def write_run(root: Path, run_id: str, val: list[float], train: list[float], *, seconds: float | list[float] = 10.0,
              memory: float = 1000.0, status: str | None = "completed", reason: str | None = None,
              epochs: int | None = None, limit_train_batches: int | None = None,
              limit_eval_batches: int | None = None, test: float | None = None, test_final: float | None = None,
              environment: dict | None = None, amp: str = "none", folder: str | None = None) -> RunDir:
    """One run of the registry experiment ``run_id`` with the given validation and training scores per epoch.

    Scores are accuracies (fractions) for vit/cnn, perplexities for lstm; losses follow from them. ``seconds``:
    training seconds of every epoch, or one value per epoch; ``environment``: entries that replace
    ``ENVIRONMENT``'s; ``amp``: the autocast precision recorded; ``folder``: the run folder's name under ``root``
    (default ``run_id``; another name makes a side run beside the grid's). ``status``
    None writes no summary (a run still going or killed); NaN values are stored as null by the writer.
    """
    experiment = dataclasses.replace(EXPERIMENTS[run_id], epochs=epochs or len(val)).resolved()
    metric = "perplexity" if experiment.model == "lstm" else "accuracy"
    loss = (lambda p: math.log(p)) if metric == "perplexity" else (lambda a: 2.5 * (1 - a))
    settings = RunSettings(out=str(root), data_dir="/data", limit_train_batches=limit_train_batches,
                           limit_eval_batches=limit_eval_batches, amp=amp)
    size = experiment.config.architecture if experiment.model == "cnn" else experiment.config.num_layers
    parameters = PARAMETERS[experiment.model][size]
    run = RunDir(root / (folder or run_id))
    run.write_config({
        "experiment": experiment.to_dict(),
        "settings": dataclasses.asdict(settings),
        "task": {"metric": metric, "higher_is_better": metric == "accuracy",
                 "unit": "tokens" if metric == "perplexity" else "images"},
        "parameters": {"total": parameters, "learnable": parameters},
        "world_size": 1,
        "environment": {**ENVIRONMENT, **(environment or {})},
        "started": "2026-01-01T00:00:00+0000",
    })
    records, wall = [], 0.0
    per_epoch = seconds if isinstance(seconds, list) else [seconds] * len(val)
    for epoch, (v, t, train_seconds) in enumerate(zip(val, train, per_epoch, strict=True), start=1):
        wall += train_seconds + 1
        record = {
            "epoch": epoch, "train_loss": loss(t), "val_loss": loss(v), f"train_{metric}": t, f"val_{metric}": v,
            "lr": experiment.lr, "train_seconds": train_seconds, "eval_seconds": 1.0,
            "wall_seconds": wall, "throughput": 4500 / train_seconds, "throughput_unit": "images/s",
            "memory": {"source": "rss", "steady_mean_mb": memory, "peak_mb": memory * 1.1, "samples": 50},
        }
        run.append_metrics(record)
        records.append(record)
    if status is not None:
        run.write_summary(_summary(run_id, experiment.epochs, metric, records, status, reason, test, test_final))
    return run


def _summary(run_id, planned, metric, records, status, reason, test, test_final) -> dict:
    higher = metric == "accuracy"
    finite = [r for r in records if r[f"val_{metric}"] is not None and math.isfinite(r[f"val_{metric}"])]
    best = (max if higher else min)(finite, key=lambda r: r[f"val_{metric}"]) if finite else None
    last = records[-1]
    summary = {
        "id": run_id, "status": status, "reason": reason, "metric": metric, "higher_is_better": higher,
        "epochs_completed": len(records), "epochs_planned": planned,
        "best_val": best[f"val_{metric}"] if best else None, "best_epoch": best["epoch"] if best else None,
        "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
        f"final_train_{metric}": last[f"train_{metric}"], f"final_val_{metric}": last[f"val_{metric}"],
        "total_seconds": last["wall_seconds"],
        "mean_epoch_seconds": sum(r["train_seconds"] for r in records) / len(records),
        "memory": {"source": "rss", "steady_mean_mb": last["memory"]["steady_mean_mb"],
                   "peak_mb": last["memory"]["peak_mb"]},
    }
    if status == "completed":
        summary["test_final"] = {"loss": 1.0, metric: test_final if test_final is not None else test}
        summary["test_best"] = {"loss": 1.0, metric: test, "epoch": best["epoch"]}
    return summary


def write_sample(run: RunDir, continuation: str, epoch: int) -> None:
    """The ``sample.json`` an LSTM run keeps (``replab.run_sample``), with the standard prompt and settings."""
    from replab.run_sample import SAMPLE_FORMAT, SAMPLE_PROMPT, SAMPLE_SETTINGS

    (run.path / "sample.json").write_text(json.dumps({
        "format": SAMPLE_FORMAT, "checkpoint": "best.pt", "epoch": epoch, "prompt": SAMPLE_PROMPT,
        "settings": dataclasses.asdict(SAMPLE_SETTINGS), "continuation": continuation,
        "text": f"{SAMPLE_PROMPT} {continuation}", "provenance": "planted by tests/report/fakes.py"}))


def rising(start: float, end: float, epochs: int = 5) -> list[float]:
    return [start + (end - start) * k / (epochs - 1) for k in range(epochs)]


# The planted study (see tests/report/test_report.py for what each number is there to check): every run at the
# specification's settings (10 epochs, no batch limits), so that it reads as results do, not as a demo.
EPOCHS = 10
VIT = {  # id: (best validation accuracy at the last epoch, final train accuracy, seconds per epoch, memory MiB)
    "vit-1": (0.60, 0.70, 12.0, 1100.0),
    "vit-2": (0.62, 0.71, 12.5, 1110.0),
    "vit-4": (0.50, 0.52, 8.0, 1000.0),    # the fastest completed configuration among 1-6
    "vit-6": (0.70, 0.90, 30.0, 1400.0),   # the best generalization among 1-6; peaks at epoch 5 below
    "vit-7": (0.72, 0.93, 5.0, 1400.0),    # faster and better than all, but not among configurations 1-6
}
LSTM = {  # id: (best validation perplexity, final train perplexity, seconds per epoch, memory MiB)
    "lstm-1": (180.0, 120.0, 40.0, 2000.0),
    "lstm-2": (170.0, 110.0, 41.0, 2010.0),
    "lstm-3": (900.0, 850.0, 35.0, 1500.0),  # the fastest
    "lstm-5": (150.0, 80.0, 50.0, 2300.0),   # the best generalization
    "lstm-6": (160.0, 70.0, 70.0, 2800.0),
}


def write_study(root: Path, with_vit7: bool = True) -> Path:
    """The ViT and LSTM grids with a diverged vit-3, an unfinished vit-5 and a missing lstm-4 (and vit-7 optional)."""
    for run_id, (best, train, seconds, memory) in VIT.items():
        if run_id == "vit-7" and not with_vit7:
            continue
        val = rising(0.3, best, EPOCHS)
        if run_id == "vit-6":  # validation peaks at epoch 5, then drops: overfitting
            val = [0.4, 0.5, 0.6, 0.65, best, 0.69, 0.68, 0.67, 0.66, 0.65]
        write_run(root, run_id, val, rising(0.3, train, EPOCHS), seconds=seconds, memory=memory, test=best - 0.01,
                  test_final=val[-1] - 0.01)
    write_run(root, "vit-3", [0.2, 0.25, math.nan], [0.2, 0.3, math.nan], seconds=1.0, memory=900.0,
              status="diverged", reason="loss became non-finite at epoch 3", epochs=EPOCHS)
    write_run(root, "vit-5", [0.3, 0.45], [0.3, 0.5], seconds=20.0, memory=1250.0, status=None, epochs=EPOCHS)
    for run_id, (best, train, seconds, memory) in LSTM.items():
        write_run(root, run_id, rising(1000.0, best, EPOCHS), rising(1200.0, train, EPOCHS), seconds=seconds,
                  memory=memory, test=best * 1.05)
    return root
