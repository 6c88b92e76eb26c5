"""`python -m maskdepth ...` is the same as the `maskdepth` console script."""

import sys

from maskdepth.cli import main

if __name__ == "__main__":
    sys.exit(main())
