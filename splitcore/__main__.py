"""`python -m splitcore`: the same as the `splitcore` console script."""

import sys

from splitcore.cli import main

sys.exit(main())
