"""The exit codes of the ``replab`` commands, and the error that ends a command with bad input.

At the bottom of the import graph: every command module (``replab.cli``, ``replab.reproduce``,
``replab.report.commands``, ``replab.data.commands``...) returns these codes and raises ``UsageError``; ``replab.cli``
prints the error as one line.
"""

EXIT_OK = 0  # success
EXIT_RUN_FAILED = 1  # a run diverged or failed
EXIT_USAGE = 2  # bad input: nothing was created
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


class UsageError(Exception):
    """Bad input: one line for the user (the problem and the fix), exit code 2."""
