"""``python -m shardline.cli``: the ``shardline`` script where it is not installed."""
from __future__ import annotations

import sys

from shardline.cli import main

sys.exit(main())
