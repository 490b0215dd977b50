"""Data safety between processes: concurrent runs and resumes, signals during set-up, a real
mount point, a full disk and a read-only file system (launches processes; mounts tmpfs where
the test runs as root and may mount, else those tests are skipped)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from processes import MPIEXEC, command, env, run

from rdgraph.compat import MPI

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

SMALL = ["--set", "mesh.cells=[8,8]", "--set", "output.fields_every=0", "--quiet"]
needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec")


def start(ranks: int, *args) -> subprocess.Popen:
    return subprocess.Popen(command(ranks, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)


def wait_for_rows(path: Path, rows: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {rows} rows")


def steps(path: Path) -> np.ndarray:
    with open(path) as f:
        return np.array([int(r[0]) for r in list(csv.reader(f))[1:]])


def files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


LONG = ["--set", "time.scheme='bdf2'", "--set", "time.dt=1e-3", "--set", "time.t_end=0.6",
        "--set", "output.checkpoint_every=20", *SMALL]


@needs_mpiexec
def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    first = start(1, "--out", str(out), *LONG)
    try:
        wait_for_rows(out / "diagnostics.csv", 20, first)
        for ranks in (1, 2):
            second = run(ranks, "--out", str(out), "--overwrite", *SMALL, timeout=120)
            assert second.returncode == 2, second.stderr
            assert f"run directory {str(out)!r} is in use" in second.stderr
            assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, err
    # One run's files only: its own config, CSV, checkpoints and final state.
    assert np.array_equal(steps(out / "diagnostics.csv"), np.arange(601))
    assert (out / "final.npz").exists() and (out / "summary.json").exists()
    assert run(1, "--resume", str(out), *SMALL).returncode == 0  # free again


@needs_mpiexec
def test_two_resumes_at_once_one_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run(1, "--out", str(out), *LONG[:-len(SMALL)], "--set", "time.t_end=0.1",
               *SMALL).returncode == 0
    resumes = [start(ranks, "--resume", str(out), "--set", "time.t_end=0.5", *SMALL)
               for ranks in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in resumes]
    statuses = sorted(status for status, _ in results)
    assert statuses == [0, 2], results
    assert any("is in use" in err for _, err in results)
    assert not any("Traceback" in err for _, err in results)
    assert np.array_equal(steps(out / "diagnostics.csv"), np.arange(501))  # no step twice
    assert not list(out.glob(".*.tmp"))


@needs_mpiexec
@pytest.mark.parametrize("ranks, signum", [(1, signal.SIGTERM), (2, signal.SIGTERM),
                                           (1, signal.SIGINT), (2, signal.SIGINT)])
def test_a_signal_during_set_up_exits_128_plus_signal(tmp_path, ranks, signum):
    # A mesh whose set-up takes seconds; the signal comes during imports or set-up.
    proc = start(ranks, "--out", str(tmp_path / "run"), "--set", "mesh.cells=[400,400]",
                 "--quiet")
    time.sleep(2.0)
    assert proc.poll() is None, "the set-up ended before the signal"
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.count(f"stopped by signal {int(signum)}") == 1, err
    assert "Traceback" not in err and "PETSC ERROR" not in err


def test_overwrite_refuses_a_real_mount_point(tmp_path):
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        (mnt / "lost+found").mkdir()
        (mnt / "lost+found" / "keep").write_text("x")
        out = mnt / "run"
        assert run(1, "--out", str(out), *SMALL).returncode == 0
        # An empty mount point becomes a run directory; --overwrite never replaces it.
        result = run(1, "--out", str(mnt), "--overwrite", *SMALL)
        assert result.returncode == 2 and "--overwrite refused" in result.stderr
        before = files(mnt)
        for path in (mnt, mnt / "run"):
            (path / ".rdgraph-run").write_text("forged marker\n")
        result = run(1, "--out", str(mnt), "--overwrite", *SMALL)
        assert result.returncode == 2 and "is a mount point" in result.stderr, result.stderr
        assert files(mnt) == {**before, ".rdgraph-run": b"forged marker\n",
                              "run/.rdgraph-run": b"forged marker\n"}


@needs_mpiexec
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_full_disk_exits_5_with_one_message(tmp_path, ranks):
    with tmpfs(tmp_path / "mnt", "600k") as mnt:
        out = mnt / "run"
        # VTX fields every step fill 600 kB within a few dozen steps.
        result = run(ranks, "--out", str(out), "--set", "mesh.cells=[16,16]",
                     "--set", "time.t_end=1.0", "--set", "output.fields_every=1",
                     "--set", "output.checkpoint_every=5", "--quiet")
        assert result.returncode == 5, result.stderr
        assert result.stderr.count("rdgraph: environment failure:") == 1, result.stderr
        assert "No space left on device" in result.stderr
        assert "the last good checkpoint is" in result.stderr
        assert "Traceback" not in result.stderr and "terminate called" not in result.stderr
        named = result.stderr.split("the last good checkpoint is ")[1].split(":")[0]
        assert Path(named).exists()
        assert not list(out.glob(".*.tmp"))


@needs_mpiexec
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_read_only_resume_exits_5_and_changes_nothing(tmp_path, ranks):
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        out = mnt / "run"
        assert run(1, "--out", str(out), "--set", "time.t_end=0.1", "--set", "time.dt=0.01",
                   "--set", "output.checkpoint_every=2", *SMALL).returncode == 0
        before = files(out)
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)]).returncode == 0
        result = run(ranks, "--resume", str(out), "--set", "time.t_end=0.2", "--set",
                     "time.dt=0.01", *SMALL)
        assert result.returncode == 5, result.stderr
        assert result.stderr.count("rdgraph: environment failure:") == 1
        assert "Read-only file system" in result.stderr and "checkpoint-00000010.npz" in \
            result.stderr
        assert "Traceback" not in result.stderr
        assert subprocess.run(["mount", "-o", "remount,rw", str(mnt)]).returncode == 0
        assert files(out) == before
        assert run(ranks, "--resume", str(out), "--set", "time.t_end=0.2", "--set",
                   "time.dt=0.01", *SMALL).returncode == 0
        assert np.array_equal(steps(out / "diagnostics.csv"), np.arange(21))
