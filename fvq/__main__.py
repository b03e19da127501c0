"""`python -m fvq`: the `fvq` command."""

import sys

from fvq.cli import main

sys.exit(main())
