"""Launching ``rdgraph run`` in its own processes (serially or under this venv's ``mpiexec``),
for the tests of signals, locks, kills and file systems that one pytest process cannot play."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
ROOT = Path(__file__).resolve().parents[1]


def command(ranks: int, *args) -> list[str]:
    """The command line of ``rdgraph run *args`` on ``ranks`` processes."""
    rdgraph = [sys.executable, "-m", "rdgraph", "run", *args]
    return rdgraph if ranks == 1 else [str(MPIEXEC), "-n", str(ranks), *rdgraph]


def env() -> dict:
    """This environment, with the repository first on the Python path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(ranks: int, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``rdgraph run *args`` to the end and capture its output."""
    return subprocess.run(command(ranks, *args), capture_output=True, text=True,
                          timeout=timeout, env=env())
