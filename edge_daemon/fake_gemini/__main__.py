"""``python -m edge_daemon.fake_gemini``: the fake server on a port."""

import argparse
import sys

from . import __doc__ as description
from .cli import add_arguments, run_from_args

parser = argparse.ArgumentParser(prog="fake-gemini", description=description)
add_arguments(parser)
sys.exit(run_from_args(parser.parse_args()))
