"""``python -m rasterlearn``."""

import sys

from rasterlearn.cli import main

sys.exit(main())
