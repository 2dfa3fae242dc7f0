"""``python -m blastoseg ...``: the same command line as ``blastoseg ...`` (used to launch
training subprocesses with the running interpreter, whatever the PATH)."""

import sys

from blastoseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
