"""``python -m replab`` is the ``replab`` command (also under ``torchrun -m replab``)."""

import sys

from replab.cli import main

sys.exit(main())
