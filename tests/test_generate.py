"""``replab generate`` and the report's samples, on small LSTM run folders written here (no training)."""

from __future__ import annotations

import pytest
import torch

from replab.cli import main
from replab.experiments import EXPERIMENTS, with_overrides
from replab.generate import SampleSettings, generate, load_lstm, sample
from replab.models.lstm import LSTM
from replab.report.samples import samples_text
from replab.report.study import load_study
from replab.run_sample import SAMPLE_PROMPT
from replab.runlog import RunDir, atomic_torch_save


def write_lstm_run(folder, hidden=8, width=16, layers=2, epoch=3, checkpoints=("best", "last"), experiment_id="lstm-1"):
    """An LSTM run folder whose checkpoints hold a small random LSTM over the full GPT-1 vocabulary."""
    torch.manual_seed(1)
    model = LSTM(40479, width, hidden, layers)
    experiment = with_overrides(EXPERIMENTS[experiment_id], hidden_size=hidden, num_layers=layers)
    run = RunDir(folder)
    run.write_config({"experiment": experiment.to_dict(), "task": {"metric": "perplexity"}})
    for name in checkpoints:
        atomic_torch_save(folder / f"{name}.pt", {"model": model.state_dict(), "epoch": epoch, "best": {}})
    return run


@pytest.fixture
def run(tmp_path, data_root, gpt1_tokenizer, monkeypatch) -> RunDir:
    """A small LSTM run; the commands find GPT-1's vocabulary in the real data folder through ``$REPLAB_DATA``."""
    monkeypatch.setenv("REPLAB_DATA", str(data_root))
    return write_lstm_run(tmp_path / "lstm-1")


def greedy_by_rerunning(model: LSTM, prompt: list[int], count: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence through the LSTM again at every step."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            log_probas, _ = model(torch.tensor([ids]), model.initial_states(1))
            scores = log_probas[0, -1].clone()
            scores[0] = -float("inf")
            ids.append(int(scores.argmax()))
    return ids[len(prompt):]


def test_carried_state_gives_what_rerunning_the_prefix_gives(run, gpt1_tokenizer):
    model, record = load_lstm(run.path)
    assert record["epoch"] == 3 and not model.training
    prompt = gpt1_tokenizer.encode("the history of the city")
    fast = generate(model, prompt, SampleSettings(tokens=12, greedy=True))
    assert fast == greedy_by_rerunning(model, prompt, 12)


def test_same_seed_same_text_other_seed_other_text(run, gpt1_tokenizer):
    model, _ = load_lstm(run.path)
    draw = lambda seed, **kw: sample(model, "the lobster", SampleSettings(tokens=20, seed=seed, **kw)).ids
    assert draw(5) == draw(5) and draw(5) != draw(6)
    assert draw(5, top_k=1) == generate(model, gpt1_tokenizer.encode("the lobster"),
                                         SampleSettings(tokens=20, greedy=True))
    assert 0 not in draw(7, temperature=5.0)  # padding is never drawn


def test_top_k_limits_the_choice(run, gpt1_tokenizer):
    model, _ = load_lstm(run.path)
    prompt = gpt1_tokenizer.encode("the")
    with torch.no_grad():
        log_probas, _ = model(torch.tensor([prompt]), model.initial_states(1))
    allowed = set(torch.topk(log_probas[0, -1], 3).indices.tolist())
    firsts = {generate(model, prompt, SampleSettings(tokens=1, top_k=3, seed=s))[0] for s in range(30)}
    assert firsts <= allowed and len(firsts) > 1


def test_cli_prints_text_reproducibly(run, capsys):
    argv = ["generate", str(run.path), "--prompt", "The lobster", "--tokens", "15", "--seed", "4"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out == first.out
    assert first.out.startswith("the lobster ") and len(first.out.split()) > 3
    assert "best.pt (epoch 3): 15 tokens, temperature 1, no top-k, seed 4" in first.err
    assert main([*argv[:-2], "--seed", "5", "--checkpoint", "last"]) == 0


def test_unknown_characters_are_read_as_unk_with_a_warning(run, capsys, caplog):
    assert main(["generate", str(run.path), "--prompt", "Tōkyō – café", "--tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("tokyo <unk> cafe")
    assert "outside GPT-1's vocabulary" in caplog.text and "–" in caplog.text


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "  \n"], "the prompt is empty"),
    (["--prompt", "x", "--tokens", "0"], "--tokens must be >= 1"),
    (["--prompt", "x", "--temperature", "0"], "--temperature must be > 0"),
])
def test_bad_settings_are_one_line_errors(run, capsys, argv, message):
    assert main(["generate", str(run.path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_run_folders_are_one_line_errors(tmp_path, capsys, data_root):
    vit = RunDir(tmp_path / "vit-2")
    vit.write_config({"experiment": EXPERIMENTS["vit-2"].resolved().to_dict()})
    no_checkpoint = write_lstm_run(tmp_path / "lstm-2", checkpoints=("last",))
    cases = [(tmp_path / "nothing", "is not a run folder"), (vit.path, "is a vit run, not an LSTM run"),
             (no_checkpoint.path, "best.pt does not exist")]
    for folder, message in cases:
        assert main(["generate", str(folder), "--prompt", "x"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["generate", str(no_checkpoint.path), "--prompt", "x", "--checkpoint", "last", "--data-dir",
                 str(data_root)]) == 0


def test_a_data_folder_without_the_vocabulary_is_a_one_line_error_naming_the_fix(run, tmp_path, capsys):
    assert main(["generate", str(run.path), "--prompt", "x", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "GPT-1's BPE vocabulary is not in" in err and "replab data download --vocabulary" in err
    assert err.count("\n") == 1


def test_default_prompt_is_the_start_of_a_validation_article(run, data_root, capsys):
    assert main(["generate", str(run.path), "--tokens", "2", "--data-dir", str(data_root)]) == 0
    assert capsys.readouterr().out.startswith("homarus gammarus, known as the european lobster")


def test_report_samples_are_labelled_deterministic_and_skip_runs_without_checkpoints(tmp_path, data_root,
                                                                                    gpt1_tokenizer):
    write_lstm_run(tmp_path / "runs" / "lstm-1", hidden=512, layers=1)  # the registry's sizes: the report reads them
    write_lstm_run(tmp_path / "runs" / "lstm-2", hidden=512, layers=1, checkpoints=(), experiment_id="lstm-2")
    study = load_study([tmp_path / "runs"])
    runs = [r for r in study.grid("lstm") if not r.missing]
    intro, items = samples_text(runs, data_root)
    assert "Samples, not results" in intro and SAMPLE_PROMPT in intro and "seed 0" in intro
    assert items[0].startswith("lstm-1 (best.pt, epoch 3), sample: ") and items[1].startswith("lstm-2: no sample")
    assert samples_text(runs, data_root)[1] == items
    without = samples_text(runs, tmp_path / "no-vocabulary")[1]
    assert without[0] == "lstm-1: no sample (the data folder holds no GPT-1 vocabulary, gpt1-bpe/: `replab data " \
        "download --vocabulary`)." and without[1] == items[1]
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--data-dir",
                 str(data_root)]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    unwrapped = " ".join(markdown.split())  # report.md wraps its prose at 120 columns
    assert "What the LSTMs write (samples)" in markdown and " ".join(items[0].split()) in unwrapped
