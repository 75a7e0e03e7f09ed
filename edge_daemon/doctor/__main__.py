"""``python -m edge_daemon.doctor``: the doctor without the rest of the CLI."""

import argparse
import sys

from . import __doc__ as description
from .cli import add_arguments, run_from_args


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="edge-daemon doctor", description=description.split("\n")[0]
    )
    parser.add_argument("--config", metavar="PATH", help="config file")
    add_arguments(parser)
    return run_from_args(parser.parse_args())


# Imported (by a tool that walks the package) it does nothing.
if __name__ == "__main__":
    sys.exit(main())
