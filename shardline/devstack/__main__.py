"""``python -m shardline.devstack up|down|status|env [--dir DIR]``."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
