"""``python -m edge_daemon.doctor``: the doctor without the rest of the CLI."""

import sys

from .runner import main

sys.exit(main())
