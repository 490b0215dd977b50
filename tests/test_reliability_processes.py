"""Killed and interrupted runs, resumed on another number of ranks (launches processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import csv_rows
from processes import MPIEXEC, command, env, run

from rdgraph.compat import MPI

# Launching mpiexec from inside an MPI job is not portable: run these from the serial suite.
pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

SETTINGS = ["--set", "mesh.cells=[8,8]", "--set", "time.scheme='bdf2'", "--set", "time.dt=1e-3",
            "--set", "output.fields_every=0", "--set", "output.checkpoint_every=10", "--quiet"]


def start_and_stop(ranks: int, out: Path, t_end: str, signum: int, after_rows: int):
    """Start a run, wait until its CSV has ``after_rows`` rows, send ``signum`` to the group."""
    proc = subprocess.Popen(command(ranks, "--out", str(out), "--set", f"time.t_end={t_end}",
                                    *SETTINGS),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    deadline = time.monotonic() + 120
    csv_path = out / "diagnostics.csv"
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_path.exists() and csv_path.read_text().count("\n") > after_rows:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.killpg(proc.pid, signum)  # the scheduler signals every process of the job
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "full"
    result = run(1, "--out", str(out), "--set", "time.t_end=0.3", *SETTINGS)
    assert result.returncode == 0, result.stderr
    return out


def compare(out: Path, reference: Path, tol: float) -> None:
    a, b = csv_rows(reference / "diagnostics.csv"), csv_rows(out / "diagnostics.csv")
    assert np.array_equal(b[:, 0], a[:, 0])  # every step once, none duplicated
    assert np.allclose(b[:, :-1], a[:, :-1], rtol=tol, atol=tol)
    x, y = np.load(reference / "final.npz"), np.load(out / "final.npz")
    assert np.allclose(y["x"], x["x"]) and np.allclose(y["rho"], x["rho"], rtol=tol, atol=tol)


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
@pytest.mark.parametrize("write, resume", [(2, 1), (1, 2)])
def test_sigkill_then_resume_on_another_rank_count(tmp_path, reference, write, resume):
    out = tmp_path / "run"
    status, _ = start_and_stop(write, out, "0.3", signal.SIGKILL, after_rows=60)
    assert status != 0
    assert list(out.glob("checkpoint-*.npz")), "no checkpoint before the kill"
    assert not (out / "final.npz").exists()
    result = run(resume, "--resume", str(out))
    assert result.returncode == 0, result.stderr
    compare(out, reference, 1e-8)


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
@pytest.mark.parametrize("ranks, signum", [(1, signal.SIGTERM), (2, signal.SIGTERM),
                                           (1, signal.SIGINT)])
def test_signal_writes_a_checkpoint_and_exits_128_plus_signal(tmp_path, reference, ranks,
                                                              signum):
    out = tmp_path / "run"
    status, err = start_and_stop(ranks, out, "0.3", signum, after_rows=40)
    assert status == 128 + signum, err
    assert err.count(f"stopped by signal {int(signum)}") == 1 and "--resume" in err
    assert "Traceback" not in err
    step = int(sorted(out.glob("checkpoint-*.npz"))[-1].stem.split("-")[1])
    assert 40 <= step < 300  # written at the stop, not at the end
    assert csv_rows(out / "diagnostics.csv")[-1, 0] == step
    result = run(ranks, "--resume", str(out))
    assert result.returncode == 0, result.stderr
    compare(out, reference, 0.0 if ranks == 1 else 1e-10)


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_exception_inside_a_run_on_two_ranks_ends_both(tmp_path):
    # A bug that fires on rank 1 only, in the middle of the time loop.
    script = tmp_path / "bug.py"
    script.write_text(
        "import sys\n"
        "import rdgraph.simulation as s\n"
        "from rdgraph.compat import MPI\n"
        "real = s.Simulation.advance\n"
        "def advance(self):\n"
        "    if self.step_index == 3 and MPI.COMM_WORLD.rank == 1:\n"
        "        raise RuntimeError('bug on rank 1')\n"
        "    return real(self)\n"
        "s.Simulation.advance = advance\n"
        "from rdgraph.cli import main\n"
        f"sys.exit(main(['run', '--out', {str(tmp_path / 'r')!r}, '--quiet']))\n"
    )
    start = time.monotonic()
    result = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script)],
                            capture_output=True, text=True, timeout=90, env=env())
    assert result.returncode != 0
    assert "bug on rank 1" in result.stderr and "Traceback" in result.stderr
    assert time.monotonic() - start < 90


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_bad_mesh_file_and_bad_resume_exit_2_on_two_ranks(tmp_path):
    (tmp_path / "bad.msh").write_text("not a mesh\n")
    out = tmp_path / "never"
    result = run(2, "--out", str(out), "--set", "mesh.shape='file'",
                 "--set", f"mesh.file='{tmp_path / 'bad.msh'}'", timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("rdgraph: error:") == 1 and "bad.msh" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    result = run(2, "--resume", str(tmp_path), "--quiet", timeout=60)
    assert result.returncode == 2 and "config.toml" in result.stderr
