"""``python -m netmem.sweep``: ``netmem-sweep``, as the console script (``cli.main()``)."""
import sys

from netmem.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
