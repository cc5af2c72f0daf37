"""notebooks/colab.ipynb: stored clean, consistent with the package, and executed whole in its CPU mode.

The execution test runs the notebook twice with nbclient, as a Colab user whose session disconnects would: the
first execution is interrupted (SIGINT to the kernel, the notebook's stop button) once the first run of the grid has
completed; the second, in a new kernel on the same folder (the local stand-in for Google Drive), must run every cell
without error, train only what was left, and show the report's tables and a figure. The CNN grid (the smallest: 4
runs) on one batch of 8 images keeps it to about a minute on a quiet 2-core CPU.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"
# What the tests change after the notebook's parameters cell (as papermill would): one small grid, tiny runs, and
# the cost cell's estimate, which the CPU demo skips by default.
TEST_PARAMETERS = ('GRIDS = ["cnn"]\n'
                   'OPTIONS = {"cnn": "--epochs 1 --batch-size 8 --limit-train-batches 1 --limit-eval-batches 1"}\n'
                   'ESTIMATE = True')
FIRST_RUN = "cnn-googlenet"  # the first run of the CNN grid


def _notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_cell(nb) -> int:
    return next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))


def _parameters(env: dict[str, str] | None = None) -> dict:
    """The values the parameters cell defines (outside Colab, with ``env`` as the environment)."""
    namespace: dict = {}
    saved = dict(os.environ)
    try:
        os.environ.update(env or {})
        exec(_notebook().cells[_parameters_cell(_notebook())].source, namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return namespace


# ------------------------------------------------------------------------------------------------ the stored file
def test_notebook_is_valid_nbformat_without_outputs():
    nb = _notebook()
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cell"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"stored outputs in cell {cell.id}: strip them"
    assert "widgets" not in nb.metadata, "stored widget state: strip it"
    assert nb.metadata.get("accelerator") == "GPU"  # Colab opens it on a GPU runtime


def test_every_step_has_a_line_of_text_above_it():
    nb = _notebook()
    for before, cell in zip(nb.cells, nb.cells[1:], strict=False):
        if cell.cell_type == "code":
            assert before.cell_type == "markdown" and before.source.strip(), f"code cell {cell.id} has no text above it"
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(re.sub(r"(?m)^\s*!.*$", "pass", cell.source))  # valid Python (IPython's ! lines aside)


def test_cpu_profile_is_the_quick_profile_of_reproduce():
    from replab.reproduce import QUICK

    flags = {"--epochs": "epochs", "--batch-size": "batch_size", "--limit-train-batches": "limit_train_batches",
             "--limit-eval-batches": "limit_eval_batches"}
    notebook = _parameters()["QUICK"]
    assert set(notebook) == set(QUICK.grids)
    for grid, options in notebook.items():
        words = options.split()
        given = {flags[flag]: int(value) for flag, value in zip(words[::2], words[1::2], strict=True)}
        expected = {k: v for k, v in vars(QUICK.grids[grid]).items() if v is not None}
        assert given == expected, f"{grid}: the notebook's quick options differ from `replab reproduce --quick`"


def test_the_repository_url_is_the_same_in_pyproject_readme_and_notebook():
    """One repository, named in pyproject.toml; the README's badge and the notebook's install cell must agree."""
    repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    assert _parameters()["REPO"] == repository
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/colab.ipynb"
    assert badge in (ROOT / "README.md").read_text()


def test_parameters_outside_colab_use_local_folders():
    values = _parameters({"REPLAB_NOTEBOOK_CPU": "1", "REPLAB_NOTEBOOK_DIR": "/tmp/x", "REPLAB_DATA": "/data"})
    assert values["CPU_DEMO"] and not values["USE_DRIVE"]
    assert (values["WORK"], values["DATA"]) == ("/tmp/x", "/data")


# ------------------------------------------------------------------------------------------------ execution
def _client(nb, folder: Path):
    from nbclient import NotebookClient

    return NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}})


def _for_test(nb):
    index = _parameters_cell(nb) + 1
    cell = nbformat.v4.new_code_cell(TEST_PARAMETERS)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index, cell)
    return nb


def _fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file of a run folder: (modification time in ns, SHA-256)."""
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir()) if p.is_file()}


def _completed(run: Path) -> bool:
    try:
        return json.loads((run / "summary.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def _interrupt_when(client, condition, stop: threading.Event, fired: list) -> None:
    """SIGINT to the kernel (as its stop button sends) once ``condition()`` holds."""
    while not stop.wait(0.1):
        provisioner = getattr(getattr(client, "km", None), "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is not None and condition():
            os.kill(process.pid, signal.SIGINT)
            fired.append(time.monotonic())
            return


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


def _cell(nb, cell_id: str):
    return next(cell for cell in nb.cells if cell.id == cell_id)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, data_root):
    """Run the notebook in CPU mode, interrupted after the first run, then again to the end. Returns the second
    execution, the run folder, the fingerprints of the runs completed before the interruption, and timings."""
    from nbclient.exceptions import CellExecutionError

    folder = tmp_path_factory.mktemp("notebook")
    drive = folder / "drive"  # stands in for Google Drive
    env = {"REPLAB_NOTEBOOK_CPU": "1", "REPLAB_NOTEBOOK_DIR": str(drive), "REPLAB_DATA": str(data_root.resolve()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_WAIT_POLICY": "PASSIVE"}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    runs = drive / "runs"
    try:
        first = _client(_for_test(_notebook()), folder)
        stop, fired = threading.Event(), []
        watcher = threading.Thread(target=_interrupt_when, daemon=True,
                                   args=(first, lambda: _completed(runs / FIRST_RUN), stop, fired))
        watcher.start()
        start, failure = time.monotonic(), None
        try:
            first.execute()
        except CellExecutionError as error:
            failure = error
        finally:
            stop.set()
            watcher.join()
        interrupted_after = time.monotonic() - start
        assert fired, f"the first execution ended before its first run completed: {failure}"
        assert failure is not None and "exit code" in str(failure), f"the interrupted grid cell did not stop: {failure}"
        done = {run.name: _fingerprint(run) for run in runs.iterdir() if _completed(run)}
        assert FIRST_RUN in done

        second = _client(_for_test(_notebook()), folder)
        start = time.monotonic()
        nb = second.execute()
        seconds = time.monotonic() - start
    finally:
        mp.undo()
    print(f"notebook: first execution interrupted after {interrupted_after:.0f} s; second, whole: {seconds:.0f} s")
    return {"nb": nb, "runs": runs, "done_before": done, "seconds": seconds}


@pytest.mark.slow
def test_every_cell_runs_without_error_in_cpu_mode(executed):
    nb = executed["nb"]
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, f"cell {cell.id} did not run"
            errors = [output for output in cell.outputs if output.output_type == "error"]
            assert not errors, f"cell {cell.id} failed: {errors}"
    assert "--amp none" in _text(_cell(nb, "precision"))  # fp32 on the CPU, with its reason
    assert FIRST_RUN in _text(_cell(nb, "cost"))  # the estimate's table (the run completed: cost 0)


@pytest.mark.slow
def test_report_cell_displays_tables_and_a_figure(executed):
    cell = _cell(executed["nb"], "report")
    shown = [output for output in cell.outputs if output.output_type == "display_data"]
    markdown = [output.data["text/markdown"] for output in shown if "text/markdown" in output.data]
    assert any(re.search(r"(?m)^\|[ :|-]*---", text) for text in markdown), "no table displayed"
    assert any("image/png" in output.data for output in shown), "no figure displayed"
    assert any("report.html" in text for text in markdown), "no link to report.html"


@pytest.mark.slow
def test_grid_cell_shows_progress_bars(executed):
    text = _text(_cell(executed["nb"], "train"))
    assert re.search(r"100%\|", text), "no tqdm progress bar in the grid cell's output"


@pytest.mark.slow
def test_rerun_after_an_interruption_resumes_without_retraining(executed):
    runs = executed["runs"]
    for name, before in executed["done_before"].items():
        assert _fingerprint(runs / name) == before, f"{name} completed before the interruption and was trained again"
    from replab.experiments import GRIDS

    assert all(_completed(runs / run) for run in GRIDS["cnn"]), "the grid did not finish after the re-run"
