"""``python -m bench``: the whole benchmark in one command (see bench/run.py);
``python -m bench --ci``: the footprint ratios CI checks (see bench/footprint.py)."""

import sys

if "--ci" in sys.argv[1:]:
    from .footprint import main
else:
    from .run import main

sys.exit(main())
