from __future__ import annotations

import sys

from mnas.cli import main

sys.exit(main())
