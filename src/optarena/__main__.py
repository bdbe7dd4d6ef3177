"""`python -m optarena ...` runs the `optarena` command line."""
import sys

from .cli import main

sys.exit(main())
