"""Convergence and verification studies; see ``docs/verification.md``.

    python scripts/convergence.py [--quick] [--out DIR] [--docs]
    mpiexec -n 2 python scripts/convergence.py --quick
"""

import sys

from rdgraph.cli.convergence import main

if __name__ == "__main__":
    sys.exit(main())
