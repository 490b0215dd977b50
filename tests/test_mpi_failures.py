"""Failures under MPI end every rank quickly with the documented exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rdgraph.compat import MPI

# Launching mpiexec from inside an MPI job is not portable: run these from the serial suite.
pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own mpiexec")

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"


def launch(args, timeout=120, **kwargs):
    env = dict(os.environ)
    return subprocess.run(
        [str(MPIEXEC), "-n", "2", *args], capture_output=True, text=True, timeout=timeout,
        env=env, **kwargs,
    )


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_exception_on_one_rank_aborts_all(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import rdgraph.cli as cli\n"
        "from rdgraph.compat import MPI\n"
        "cli._install_mpi_excepthook()\n"
        "if MPI.COMM_WORLD.rank == 1:\n"
        "    raise RuntimeError('boom on rank 1')\n"
        "MPI.COMM_WORLD.Barrier()\n"
    )
    result = launch([sys.executable, str(script)], timeout=60)
    assert result.returncode != 0
    assert "boom on rank 1" in result.stderr


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_invalid_input_exits_2_on_two_ranks(tmp_path):
    result = launch([str(BIN / "rdgraph"), "run", "--out", str(tmp_path / "x"),
                     "--set", "model.potential=open('f')"], timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("rdgraph: error:") == 1
    assert "open" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_default_problem_prints_its_table(tmp_path):
    out = tmp_path / "default"
    result = launch([str(BIN / "rdgraph"), "run", "--out", str(out),
                     "--set", "time.t_end=1.0", "--set", "mesh.cells=[24,24]"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert "winner: vertex" in result.stdout
    assert "free energy" in result.stdout and "time per step" in result.stdout
    assert (out / "diagnostics.csv").exists() and (out / "summary.json").exists()
