"""`python -m sandbox [options]`: the same as `tapedeck sandbox`."""

import sys

from sandbox.cli import main

sys.exit(main())
