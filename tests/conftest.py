"""Shared fixtures and helpers.

Every test runs serially and under ``mpiexec -n 2``, but those marked :data:`serial_only`:
their outcome cannot depend on the number of ranks (static checks of the sources, pure
ODE integrations, long runs on a code path that other tests cover on 2 ranks).
"""

from __future__ import annotations

import copy
import csv
import gc
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from rdgraph.cli import main
from rdgraph.compat import MPI  # noqa: F401  (imports DOLFINx the supported way)
from rdgraph.output import checkpoint
from rdgraph.output.rundir import open_run_directory
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

#: A test that runs serially only: its outcome cannot depend on the number of ranks, and the
#: parallel code paths it takes are covered on 2 ranks by other tests.
serial_only = pytest.mark.skipif(MPI.COMM_WORLD.size > 1,
                                 reason="rank-count independent: runs serially only")

BASE_CONFIG = {
    "mesh": {"shape": "rectangle", "cells": [8, 8]},
    "space": {"degree": 1},
    "graph": {"kind": "path", "n": 3},
    "model": {"coupling": "laplacian", "beta": 1.0},
    "time": {"scheme": "implicit-euler", "dt": 0.01, "t_end": 0.05},
    "solver": {"type": "direct"},
    "output": {"fields_every": 0},
}


def load_module(path: Path):
    """Import a script or example that is not part of the package, by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_config(**sections) -> dict:
    """BASE_CONFIG with the given sections' keys replaced (a deep copy)."""
    data = copy.deepcopy(BASE_CONFIG)
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def shell_mismatch(operators, mass_coefficient: float, operator_coefficient: float) -> float:
    """``|(S − A) x| / |A x|`` for a random ``x``: the matrix-free shell ``S`` against the
    assembled matrix ``A`` of the same ``a (I ⊗ M) + b A`` (collective)."""
    A = operators.matrix(mass_coefficient, operator_coefficient)
    S = operators.shell(mass_coefficient, operator_coefficient)
    x, y = A.createVecs()
    x.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(x.getLocalSize())
    z = y.duplicate()
    A.mult(x, y)
    S.mult(x, z)
    z.axpy(-1.0, y)
    mismatch = z.norm() / y.norm()
    for obj in (A, S, x, y, z):
        obj.destroy()
    return mismatch


def put(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` on rank 0 (seen by all ranks); return the path.

    The first barrier makes every rank finish reading the file before rank 0 replaces it.
    """
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(text)
    MPI.COMM_WORLD.Barrier()
    return str(path)


def csv_rows(path) -> np.ndarray:
    """The rows of a CSV file after its header, as floats."""
    with open(path) as f:
        return np.array(list(csv.reader(f))[1:], dtype=float)


def write_config(path: Path, data: dict) -> str:
    """Write ``data`` as TOML to ``path`` on rank 0 (seen by all ranks); return the path."""
    return put(path, tomli_w.dumps(data))


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (relative, sorted); empty if it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_refused(capsys, args: list[str], message: str, out: Path, status: int = 2) -> str:
    """``rdgraph`` with ``args``, in this process, refuses and writes nothing (collective).

    Checks the exit status, that ``message`` is in the error output (rank 0 prints it) and
    that the folder holding ``out`` is as it was: no run directory, no stray file. Returns
    rank 0's error output (empty on the other ranks) for further checks.
    """
    comm = MPI.COMM_WORLD
    before = listing(out.parent)
    comm.Barrier()  # every rank has looked before any rank runs
    capsys.readouterr()  # output of earlier steps of the test is not this refusal's
    assert main(args) == status
    err = capsys.readouterr().err
    if comm.rank == 0:
        assert message in err, err
    comm.Barrier()  # rank 0 has finished with the file system
    assert not out.exists()
    assert listing(out.parent) == before
    return err


def cut_run(data: dict, whole: Path | str, cut: Path | str, steps: int) -> None:
    """Make ``cut`` the run directory that the run of ``data`` written to ``whole`` would have
    left had it been stopped just after its checkpoint at step ``steps`` (collective).

    The same steps are taken again by a :class:`Simulation` and checkpointed into a new run
    directory, and the first rows of ``whole``'s ``diagnostics.csv`` (steps ``0..steps``) are
    copied there: what ``--resume`` finds after an interruption.
    """
    comm = MPI.COMM_WORLD
    sim = Simulation(settings_from_dict(data))
    try:
        for _ in range(steps):
            sim.advance()
        assert sim.step_index == steps
        directory = open_run_directory(cut, comm, overwrite=False, explicit=True)
        checkpoint.write_checkpoint(sim, directory.path)
    finally:
        sim.destroy()
    if comm.rank == 0:
        lines = Path(whole, "diagnostics.csv").read_text().splitlines()[: steps + 2]
        Path(cut, "diagnostics.csv").write_text("\n".join(lines) + "\n")
    comm.Barrier()
    directory.release()


# -- one report under mpiexec ----------------------------------------------------------------
# Under ``mpiexec -n 2 python -m pytest`` every rank runs the whole session. Only rank 0 keeps
# pytest's terminal report (progress, summary), as the DOLFINx test suite does; the other
# ranks print their failures alone, and the session's exit status is the worst of all ranks.
@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if MPI.COMM_WORLD.rank > 0:
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)


def pytest_runtest_logreport(report):
    comm = MPI.COMM_WORLD
    if comm.rank > 0 and report.failed:
        import sys

        sys.stderr.write(f"\n[rank {comm.rank}] FAILED {report.nodeid} ({report.when})\n"
                         f"{report.longreprtext}\n")
        sys.stderr.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    comm = MPI.COMM_WORLD
    if comm.size == 1:
        return
    worst = comm.allreduce(int(exitstatus), op=MPI.MAX)
    if worst != int(exitstatus):
        session.exitstatus = worst
        if comm.rank == 0:
            import sys

            sys.stderr.write(f"\nrdgraph tests: another rank finished with status {worst} (its "
                             f"failures are printed on their own, marked [rank N])\n")


@pytest.fixture
def config():
    return make_config


@pytest.fixture
def shared_tmp(tmp_path_factory) -> Path:
    """A temporary folder made on rank 0 and seen by every rank."""
    comm = MPI.COMM_WORLD
    path = str(tmp_path_factory.mktemp("shared")) if comm.rank == 0 else None
    return Path(comm.bcast(path, root=0))


# -- garbage collection at fixed points ----------------------------------------------------
# PETSc objects caught in reference cycles are destroyed by the cyclic garbage collector, and
# their destruction is collective: every rank collects at the same points, after each test.
# A full collection walks every object the collector tracks, about 80 000 once DOLFINx, UFL
# and FFCx are imported: half a second, which made up a quarter of the suite's time. Objects
# alive at the end of a test are not its garbage, so they are frozen (gc.freeze) and the next
# test's collection walks only what was made since. Once per module everything is unfrozen
# and collected, so that garbage of module fixtures and caches is still destroyed, collectively.
@pytest.fixture(autouse=True)
def collective_teardown():
    """Destroy the test's garbage collectively: gc on every rank, then a barrier."""
    yield
    gc.collect()
    gc.freeze()
    MPI.COMM_WORLD.Barrier()


@pytest.fixture(autouse=True, scope="module")
def collective_module_teardown():
    """Collect all that is garbage after the module's tests, on every rank, then a barrier."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    MPI.COMM_WORLD.Barrier()
