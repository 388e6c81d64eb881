"""`python -m lego_inversion ...` is `lego ...` (and what `accelerate launch -m lego_inversion` runs)."""

import sys

from .cli import main

sys.exit(main())
