"""``replab.runner``: the commands share it, and the report commands no longer import the ``replab`` CLI."""

from __future__ import annotations

import subprocess
import sys


def test_report_commands_do_not_import_the_cli():
    code = "import replab.report.commands, sys; assert 'replab.cli' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runner_imports_neither_command_module():
    code = ("import replab.runner, sys; "
            "assert not {'replab.cli', 'replab.report.commands', 'benchmarks'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_commands_share_the_runner():
    from replab import cli, runner
    from replab.report import commands

    assert cli.UsageError is runner.UsageError is commands.UsageError
    assert (cli.EXIT_OK, runner.EXIT_RUN_FAILED, runner.EXIT_USAGE, cli.EXIT_INTERRUPTED) == (0, 1, 2, 130)
