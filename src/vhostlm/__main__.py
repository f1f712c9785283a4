"""`python -m vhostlm`."""

import sys

from vhostlm.cli import main

sys.exit(main())
