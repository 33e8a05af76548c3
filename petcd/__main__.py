"""`python -m petcd`: the same as the `petcd` command."""

import sys

from petcd.cli.main import main

sys.exit(main())
