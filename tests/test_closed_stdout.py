"""``rdgraph run ... | head -1``: a closed standard output ends the run quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rdgraph.compat import MPI

# Launches its own process: run from the serial suite.
pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

ROOT = Path(__file__).resolve().parents[1]


def test_a_closed_pipe_stops_the_run_with_a_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rdgraph", "run", "--out", str(out), "--set",
               "mesh.cells=[8,8]", "--set", "time.t_end=50", "--set", "output.fields_every=0",
               "--set", "output.plots=false"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # what `head -1` reads
    proc.stdout.close()
    _, err = proc.communicate(timeout=180)
    err = err.decode()
    assert first.startswith(b"rdgraph: 8 vertices")
    assert "PETSC ERROR" not in err and "MPI_Abort" not in err and "Traceback" not in err
    assert "BrokenPipeError" not in err
    # Stopped as by a signal: status 128 + SIGPIPE, a checkpoint to resume from, one line.
    assert proc.returncode == 141, err
    assert err.count("\n") == 1 and "stopped by signal 13" in err
    assert list(out.glob("checkpoint-*.npz"))
