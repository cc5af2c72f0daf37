"""``scripts/grid-background``: a grid started from a pinned checkout, resumed later with the same commit and
options, never a second copy beside a running one. A stand-in interpreter records what it is asked to run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "grid-background"

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$PWD $*" >> "$RECORD"
case " $* " in
  *" --dry-run "*) echo "id s/step ... estimated"; exit "${FAKE_DRY_RUN_EXIT:-0}" ;;
  *) sleep "${FAKE_SECONDS:-30}" ;;
esac
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def setup(tmp_path):
    """A repository holding the script (two commits), a stand-in interpreter, and the environment to call it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "grid-background")
    git(repo.parent, "init", "-q", str(repo))
    for message in ("first", "second"):
        (repo / "file").write_text(message)
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {**os.environ, "REPLAB_PYTHON": str(python), "RECORD": str(tmp_path / "record"),
           "GRID_HOME": str(tmp_path / "grid-lstm")}
    yield repo, env, tmp_path
    pid = tmp_path / "grid-lstm" / "grid.pid"
    if pid.exists():
        subprocess.run(["kill", pid.read_text().strip()], check=False)


def run(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts" / "grid-background"), *args], env=env, capture_output=True, text=True)


def recorded(tmp_path: Path, count: int) -> list[str]:
    for _ in range(100):  # the background start may take a moment
        lines = (tmp_path / "record").read_text().splitlines() if (tmp_path / "record").exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return lines


def wait_until_ended(pid_file: Path) -> None:
    pid = int(pid_file.read_text())
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the stand-in grid {pid} did not end")


def test_first_start_pins_estimates_and_starts_then_a_second_leaves_it_alone(setup):
    repo, env, tmp_path = setup
    first = git(repo, "rev-parse", "HEAD~1")
    home = tmp_path / "grid-lstm"
    assert run(repo, env, "lstm").returncode == 2  # a first start must name its commit
    started = run(repo, env, "lstm", first, "--", "--amp", "bf16")
    assert started.returncode == 0, started.stderr
    assert git(home, "rev-parse", "HEAD") == first and (home / "file").read_text() == "first"
    assert "estimated" in (home / "dry-run.txt").read_text()
    calls = recorded(tmp_path, 2)
    expected = f"{home} -m replab grid lstm --out runs --no-progress --amp bf16"
    assert calls == [f"{expected} --dry-run", expected]
    again = run(repo, env, "lstm")
    assert again.returncode == 0 and "running already" in again.stdout
    assert len(recorded(tmp_path, 2)) == 2


def test_a_later_start_resumes_with_the_same_commit_and_options_and_refuses_others(setup):
    repo, env, tmp_path = setup
    env = {**env, "FAKE_SECONDS": "0"}
    first, second = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    assert run(repo, env, "lstm", first, "--", "--amp", "bf16").returncode == 0
    recorded(tmp_path, 2)
    wait_until_ended(tmp_path / "grid-lstm" / "grid.pid")  # the stand-in grid has ended: the next start resumes it
    other_commit = run(repo, env, "lstm", second)
    assert other_commit.returncode == 2 and "one commit" in other_commit.stderr
    other_options = run(repo, env, "lstm", "--", "--amp", "none")
    assert other_options.returncode == 2 and "keeps the options" in other_options.stderr
    resumed = run(repo, env, "lstm", first)
    assert resumed.returncode == 0, resumed.stderr
    calls = recorded(tmp_path, 3)
    assert calls[2] == calls[1] and "--dry-run" not in calls[2]  # the estimate is kept from the first start


def test_a_failed_estimate_starts_nothing_and_a_first_start_keeps_no_checkout(setup):
    """``--amp bf16`` for the LSTM on a CPU without bf16 instructions: the dry run exits 2."""
    repo, env, tmp_path = setup
    first, second = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    home = tmp_path / "grid-lstm"
    failed = run(repo, {**env, "FAKE_DRY_RUN_EXIT": "2"}, "lstm", first, "--", "--amp", "bf16")
    assert failed.returncode == 2 and "nothing started" in failed.stderr and str(home) in failed.stderr
    assert not home.exists() and str(home) not in git(repo, "worktree", "list")
    assert len(recorded(tmp_path, 1)) == 1  # the dry run only
    started = run(repo, {**env, "FAKE_SECONDS": "0"}, "lstm", second, "--", "--amp", "none")  # another commit now
    assert started.returncode == 0, started.stderr
    assert git(home, "rev-parse", "HEAD") == second
