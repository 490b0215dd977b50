"""Progress reporting: the bar, batch log lines, --quiet (in-process and in real processes)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.output.diagnostics import Diagnostics
from rdgraph.output.progress import Progress, SetupProgress, format_duration

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def diag(step: int, mass: float = 1.0) -> Diagnostics:
    return Diagnostics(step=step, t=0.1 * step, vertex_masses=np.array([mass / 2, mass / 2]),
                       free_energy=-float(step), rel_entropy=1.0 / (1 + step),
                       min_density=0.0, ksp_iterations=7)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
    assert format_duration(float("inf")) == "?"


def test_log_lines_every_tenth_with_drift_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress(100, stream=out, interactive=False, clock=clock)
    progress(diag(0, mass=2.0))
    for step in range(1, 101):
        clock.now += 0.5
        progress(diag(step, mass=2.0 * (1 + 1e-9 * step)))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].split()[:2] == ["step", "10/100"]
    assert "drift = 1.00e-08" in lines[0] and "its = 7" in lines[0]
    assert "eta 0:45" in lines[0]  # 90 steps left at 0.5 s each
    assert lines[-1].split()[:2] == ["step", "100/100"] and "eta 0:00" in lines[-1]


def test_slow_runs_log_every_interval():
    out, clock = io.StringIO(), Clock()
    progress = Progress(1000, stream=out, interactive=False, log_interval=60.0, clock=clock)
    progress(diag(0))
    for step in range(1, 31):
        clock.now += 25.0  # 100 steps per 10 % would take 2500 s: too long to stay silent
        progress(diag(step))
    steps = [int(line.split()[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert steps == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]


def test_bar_redraws_one_line_and_ends_it():
    out, clock = io.StringIO(), Clock()
    progress = Progress(20, stream=out, interactive=True, min_interval=1.0, clock=clock)
    progress(diag(0))
    for step in range(1, 21):
        clock.now += 0.3
        progress(diag(step))
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1
    assert 4 <= text.count("\r") <= 8  # at most one redraw a second, plus the last
    assert "[" + "#" * 30 + "]" in text.split("\r")[-1]


def test_a_bar_left_open_by_a_failed_run_is_ended():
    out, clock = io.StringIO(), Clock()
    progress = Progress(20, stream=out, interactive=True, min_interval=0.0, clock=clock)
    for step in range(5):
        clock.now += 1.0
        progress(diag(step))
    assert not out.getvalue().endswith("\n")
    progress.close()
    progress.close()  # once only
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_resumed_run_counts_from_its_first_step():
    out, clock = io.StringIO(), Clock()
    progress = Progress(100, stream=out, interactive=False, clock=clock)
    progress(diag(50))
    for step in range(51, 101):
        clock.now += 1.0
        progress(diag(step))
    first = out.getvalue().splitlines()[0]
    assert first.split()[1] == "60/100" and "eta 0:40" in first


@pytest.mark.parametrize("kwargs", [{"quiet": True}, {"rank": 1}])
def test_quiet_and_other_ranks_print_nothing(kwargs):
    out = io.StringIO()
    progress = Progress(10, stream=out, interactive=False, **kwargs)
    for step in range(11):
        progress(diag(step))
    assert out.getvalue() == ""


def test_default_mode_follows_isatty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert Progress(5, stream=Tty()).interactive
    assert not Progress(5, stream=io.StringIO()).interactive


# Real processes: what a batch log and --quiet get. Launched from the serial suite only
# (mpiexec inside an MPI job is not portable).
processes = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")


def launch(ranks: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "rdgraph", "run", *args]
    if ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def small_config(tmp_path) -> Path:
    path = tmp_path / "small.toml"
    data = make_config(mesh={"shape": "interval", "cells": [16]},
                       time={"dt": 0.01, "t_end": 0.2}, output={"checkpoint_every": 0})
    path.write_text(tomli_w.dumps(data))
    return path


@processes
@pytest.mark.parametrize("ranks", [1, 2])
def test_batch_log_has_plain_lines_from_rank_0(tmp_path, small_config, ranks):
    result = launch(ranks, str(small_config), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout  # a pipe gets whole lines, never a bar
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("step ")]
    # Every 2nd of 20 steps, printed once although two ranks ran.
    assert [line.split()[1] for line in lines] == [f"{s}/20" for s in range(2, 21, 2)]
    assert all("drift = " in line and "eta " in line for line in lines)


@processes
def test_quiet_run_prints_nothing(tmp_path, small_config):
    result = launch(2, str(small_config), "--out", str(tmp_path / "run"), "--quiet",
                    "--set", "output.plots=true")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "run" / "plots" / "masses.png").is_file()


def test_setup_progress_is_silent_when_fast_and_reports_phases_when_slow():
    now = [0.0]
    out = io.StringIO()
    fast = SetupProgress(stream=out, clock=lambda: now[0])
    for phase in ("mesh", "forms", "solver"):
        now[0] += 0.5
        fast.phase(phase)
    fast.done()
    assert out.getvalue() == ""
    slow = SetupProgress(stream=out, clock=lambda: now[0], after=3.0)
    slow.phase("mesh")
    now[0] += 5.0
    slow.phase("solver")
    now[0] += 2.0
    slow.done()
    assert out.getvalue().splitlines() == [
        "rdgraph: set-up 0:05 mesh: done in 5.0 s", "rdgraph: set-up 0:05 solver ...",
        "rdgraph: set-up 0:07 solver: done in 2.0 s", "rdgraph: set-up 0:07 time stepping ..."]
    quiet = SetupProgress(stream=out, clock=lambda: now[0], quiet=True)
    now[0] += 10
    quiet.done()
    assert len(out.getvalue().splitlines()) == 4


def test_setup_progress_prints_long_loops_reported_to_the_setup_logger():
    """Factorizations and per-vertex assembly report to ``rdgraph.setup`` inside a phase;
    the set-up prints them (rank 0) until it is done, and nothing after."""
    import logging

    from rdgraph.output.progress import SETUP_LOGGER

    now = [0.0]
    out = io.StringIO()
    progress = SetupProgress(stream=out, clock=lambda: now[0], after=3.0)
    logger = logging.getLogger(SETUP_LOGGER)
    now[0] += 4.0
    progress.phase("solver (auto)")
    now[0] += 3.5
    logger.info("spectral solver: factorization %d of %d on this rank (%.0f s)", 3, 7, 3.5)
    progress.done()
    logger.info("after the set-up")
    assert out.getvalue().splitlines()[:2] == [
        "rdgraph: set-up 0:04 solver (auto) ...",
        "rdgraph: set-up 0:08 spectral solver: factorization 3 of 7 on this rank (4 s)"]
    assert "after the set-up" not in out.getvalue()


def test_setup_progress_detaches_its_handler_when_the_set_up_raises():
    """A set-up that raises must not leave its handler on the ``rdgraph.setup`` logger: later
    set-ups in the same process would print through the dead one."""
    import logging

    from rdgraph.output.progress import SETUP_LOGGER

    logger = logging.getLogger(SETUP_LOGGER)
    before = list(logger.handlers)
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="set-up failed"):
        with SetupProgress(stream=out) as progress:
            assert len(logger.handlers) == len(before) + 1
            progress.phase("mesh")
            raise RuntimeError("set-up failed")
    assert logger.handlers == before
    logger.info("after the failed set-up")
    assert "after the failed set-up" not in out.getvalue()


def test_simulation_with_bad_input_leaves_no_setup_handler():
    """The same through ``Simulation(verbose=True)``, failing in the model's set-up (after the
    progress began), on every rank."""
    import logging

    from rdgraph.errors import InputError
    from rdgraph.output.progress import SETUP_LOGGER
    from rdgraph.problem.config import settings_from_dict
    from rdgraph.simulation import Simulation

    logger = logging.getLogger(SETUP_LOGGER)
    before = list(logger.handlers)
    settings = settings_from_dict({
        "mesh": {"shape": "rectangle", "cells": [4, 4]}, "graph": {"kind": "path", "n": 5},
        "model": {"potential": "1/(g - 3) + x[0]"},
        "time": {"dt": 0.1, "t_end": 0.1}, "output": {"fields_every": 0}})
    with pytest.raises(InputError, match="not finite"):
        Simulation(settings, MPI.COMM_WORLD, verbose=True)
    assert logger.handlers == before
