"""``python -m target_databox.emulator``."""

import sys

from .cli import main

sys.exit(main())
