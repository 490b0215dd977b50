"""Under ``mpiexec -n 2 python -m pytest`` only rank 0 prints pytest's report, and the exit
status reflects a failure on any rank (launches its own processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rdgraph.compat import MPI

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

TESTS = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"

CASES = '''
from rdgraph.compat import MPI


def test_passes_everywhere():
    assert True


def test_fails_on_rank_1_only():
    assert MPI.COMM_WORLD.rank == 0, "rank 1 disagrees"
'''


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside the interpreter")
def test_one_report_and_the_worst_status(tmp_path):
    # The suite's conftest.py beside a small test file, as the suite runs it.
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "pytest", "-q",
                           "-p", "no:cacheprovider", "test_cases.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    # Rank 0's report once: one progress line, one summary line.
    assert done.stdout.count("test_cases.py") <= 1 and done.stdout.count("passed") == 1
    assert "2 passed" in done.stdout
    # Rank 1's failure is printed (by itself) and fails the command.
    assert "[rank 1] FAILED test_cases.py::test_fails_on_rank_1_only" in done.stderr
    assert "rank 1 disagrees" in done.stderr
    assert done.returncode != 0
