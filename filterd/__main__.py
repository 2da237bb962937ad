"""`python -m filterd` runs the command line."""

import sys

from filterd.cli import main

sys.exit(main())
