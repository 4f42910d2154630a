"""`python -m imgate` is the `imgate` command."""

import sys

from imgate.cli.main import main

sys.exit(main())
