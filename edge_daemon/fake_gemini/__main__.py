"""``python -m edge_daemon.fake_gemini``: the fake server on a port."""

import argparse
import sys

from . import __doc__ as description
from .cli import add_arguments, run_from_args


def main() -> int:
    parser = argparse.ArgumentParser(prog="fake-gemini", description=description)
    add_arguments(parser)
    return run_from_args(parser.parse_args())


# Imported (by a tool that walks the package) it does nothing.
if __name__ == "__main__":
    sys.exit(main())
