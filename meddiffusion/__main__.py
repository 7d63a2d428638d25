"""``python -m meddiffusion`` is ``meddiff``: how Slicer's Python runs the backend."""

import sys

from meddiffusion.cli import main

sys.exit(main())
