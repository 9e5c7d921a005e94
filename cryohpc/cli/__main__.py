"""``python -m cryohpc.cli``."""

import sys

from . import main

sys.exit(main())
