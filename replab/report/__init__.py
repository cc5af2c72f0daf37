"""The report of the study: figures, tables and findings from run folders (``replab report``), and the one-command
reproduction that trains the grids and then writes it (``replab reproduce``).

Modules: ``runs`` (the runs as the report reads them), ``figures``, ``tables``, ``findings``, ``document``
(``write_report``: assembles report.md and the self-contained report.html) and ``commands`` (the CLI). Nothing is
imported here, so ``replab`` starts without matplotlib.
"""
