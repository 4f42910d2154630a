"""`python -m imgate` is the `imgate` command."""

import sys

from imgate.cli import main

sys.exit(main())
