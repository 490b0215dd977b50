"""Reliability: bad input refused with status 2, retried steps, checkpoints and resume, memory."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import tomli_w
from conftest import csv_rows, make_config, put

from rdgraph import Simulation, settings_from_dict
from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import SolverError
from rdgraph.output.checkpoint import latest_checkpoint

COMM = MPI.COMM_WORLD


BAD_INPUTS = [
    # (config changes, --set overrides, files to write, expected message)
    ({"mesh": {"shape": "rectangle"}, "meshh": {}}, [], {}, "did you mean 'mesh'"),
    ({"time": {"dtt": 0.1}}, [], {}, "did you mean 'dt'"),
    ({"time": {"dt": "small"}}, [], {}, "time.dt = 'small': expected a number"),
    ({"time": {"dt": 0.0}}, [], {}, "time.dt = 0.0: must be > 0"),
    ({"time": {"t_end": -1.0}}, [], {}, "time.t_end = -1.0: must be > 0"),
    ({"space": {"degree": 0}}, [], {}, "space.degree = 0"),
    ({"graph": {"kind": "edges", "n": 3, "edges": [[0, 1, -1.0]]}}, [], {}, "weight"),
    ({"graph": {"kind": "edges", "n": 3, "edges": [[1, 1, 1.0]]}}, [], {}, "self loop"),
    ({"graph": {"kind": "edges", "n": 3, "edges": [[0, 5, 1.0]]}}, [], {}, "out of"),
    ({"graph": {"kind": "edges", "n": 2, "edges": [[0, 1, float("nan")]]}}, [], {}, "finite"),
    ({"model": {"potentials": ["x[0]", "x[1]"]}}, [], {}, "model.potentials has 2 entries"),
    ({"model": {"potential": "x[0] +"}}, [], {}, "not a valid expression"),
    ({"model": {"potential": "foo(x[0])"}}, [], {}, "unknown function 'foo'"),
    ({"model": {"initial": "y + 1"}}, [], {}, "'y + 1'"),
    ({"model": {"potential": "log(x[0] - 5)"}}, [], {}, "is not finite (NaN or inf) on the mesh"),
    ({"model": {"coupling": "gibbs", "beta": 1e-3, "potential": "2*g*x[0]"}}, [], {},
     "gibbs rates overflow"),
    ({"mesh": {"shape": "file", "file": "missing.msh"}}, [], {}, "does not exist"),
    ({"mesh": {"shape": "file", "file": "notgmsh.msh"}}, [], {"notgmsh.msh": "hello\n"},
     "is not a gmsh .msh file"),
    ({"graph": {"kind": "file", "file": "edges.csv"}}, [], {"edges.csv": "0,1,x\n"},
     "is not a number"),
    ({}, ["time.nosuch=1"], {}, "unknown key time.nosuch"),
    ({}, ["output.checkpoint_every=-1"], {}, "output.checkpoint_every = -1"),
    ({}, ["solver.max_retries=1.5"], {}, "solver.max_retries = 1.5: expected an integer"),
]


@pytest.mark.parametrize("changes, overrides, files, message", BAD_INPUTS)
def test_bad_input_exits_2_with_one_message_and_no_run_directory(
    shared_tmp, capsys, changes, overrides, files, message
):
    data = make_config()
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    if "mesh" in changes and changes["mesh"].get("shape") == "file":
        data["mesh"].pop("cells", None)
    for name, text in files.items():
        put(shared_tmp / name, text)
    text = tomli_w.dumps(data)
    config = put(shared_tmp / "bad.toml", text)
    out = shared_tmp / "never"
    args = ["run", config, "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert err.count("rdgraph: error:") == 1, err
        assert message in err, err
        assert "Traceback" not in err
    else:
        assert err == ""
    assert not out.exists()


def test_refused_resume_leaves_the_run_directory_alone(shared_tmp, capsys):
    config = put(shared_tmp / "c.toml", tomli_w.dumps(make_config()))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    # Another dt is another time grid: the checkpoint does not belong to it.
    assert main(["run", config, "--resume", str(out), "--quiet", "--set", "time.dt=0.005"]) == 2
    if COMM.rank == 0:
        assert "written for other settings" in capsys.readouterr().err
    assert main(["run", "--resume", str(shared_tmp / "nothing"), "--quiet"]) == 2
    after = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert after == before


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
def test_resume_continues_exactly(shared_tmp, scheme):
    base = make_config(time={"scheme": scheme, "dt": 0.01, "t_end": 0.08},
                       model={"potential": "(x[0] - 0.3*g)**2", "source": "x[1]*exp(-t)"},
                       output={"checkpoint_every": 2})
    config = put(shared_tmp / "c.toml", tomli_w.dumps(base))
    full, part = shared_tmp / "full", shared_tmp / "part"
    assert main(["run", config, "--out", str(full), "--quiet"]) == 0
    assert main(["run", config, "--out", str(part), "--quiet", "--set", "time.t_end=0.05"]) == 0
    # The end checkpoint (step 5) and the periodic one before it (step 4) are kept.
    names = sorted(p.name for p in part.glob("checkpoint-*.npz"))
    assert names == ["checkpoint-00000004.npz", "checkpoint-00000005.npz"]
    assert main(["run", config, "--resume", str(part), "--quiet"]) == 0
    a, b = csv_rows(full / "diagnostics.csv"), csv_rows(part / "diagnostics.csv")
    assert np.array_equal(b[:, 0], np.arange(9))  # no duplicated or missing rows
    x, y = np.load(full / "final.npz"), np.load(part / "final.npz")
    if COMM.size == 1:
        assert np.array_equal(a, b)
        assert np.array_equal(x["rho"], y["rho"])
    else:  # MUMPS on 2 ranks is reproducible to about 1e-14 only
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
        assert np.allclose(x["rho"], y["rho"], rtol=1e-10, atol=1e-12)


def _settings(**sections):
    return settings_from_dict(make_config(**sections))


def test_a_failed_step_is_retried_with_half_steps():
    settings = _settings(time={"dt": 0.02, "t_end": 0.04},
                         model={"potential": "(x[0] - 0.5*g)**2"})
    sim = Simulation(settings)
    real_step = sim.stepper.step
    calls = []

    def failing_first(x, t):
        calls.append(t)
        if len(calls) == 1:
            raise SolverError("forced failure")
        return real_step(x, t)

    sim.stepper.step = failing_first
    sim.advance()
    assert sim.guard.retries == 1 and sim.step_index == 1
    # The same step as two implicit-Euler steps of dt / 2, done by hand.
    ref = Simulation(_settings(time={"dt": 0.01, "t_end": 0.04},
                               model={"potential": "(x[0] - 0.5*g)**2"}))
    ref.advance()
    ref.advance()
    assert np.allclose(sim.state.array_r, ref.state.array_r, rtol=1e-12, atol=1e-14)
    sim.advance()  # the next step is a full one again
    assert len(calls) == 2 and sim.guard.retries == 1
    sim.destroy()
    ref.destroy()


def test_a_step_that_keeps_failing_exits_3_with_a_checkpoint(shared_tmp, capsys):
    # A state that changes: a constant one is its own next step, and the Krylov solve that
    # starts from it converges at once.
    data = make_config(solver={"type": "krylov", "ksp_type": "cg", "pc_type": "jacobi",
                               "max_retries": 2},
                       model={"initial": "1 + 0.3*cos(pi*x[0])*(g + 1)"},
                       time={"dt": 0.01, "t_end": 0.03})
    config = put(shared_tmp / "k.toml", tomli_w.dumps(data))
    out = shared_tmp / "k"
    assert main(["run", config, "--out", str(out), "--quiet", "-rd_ksp_max_it", "1"]) == 3
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert "step 1 (t = 0 -> 0.01) failed after 2 halvings" in err, err
        assert "the linear solve diverged" in err and "checkpoint-00000000.npz" in err
        assert latest_checkpoint(out).name == "checkpoint-00000000.npz"
    # The failed run resumes once the solver is given enough iterations.
    assert main(["run", config, "--resume", str(out), "--quiet"]) == 0
    assert np.array_equal(csv_rows(out / "diagnostics.csv")[:, 0], np.arange(4))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_memory_stays_flat_over_many_steps():
    settings = _settings(time={"scheme": "bdf2", "dt": 1e-3, "t_end": 0.4},
                         model={"coupling": "gibbs", "potential": "(x[0] - 0.3*g)**2",
                                "source": "x[1]*exp(-t)"})
    sim = Simulation(settings)
    for _ in range(50):  # warm-up: caches, lazily built solvers
        sim.advance()
        sim.diagnostics()
    before = _rss_kib()
    for _ in range(350):
        sim.advance()
        sim.diagnostics()
    growth = _rss_kib() - before
    sim.destroy()
    # A leak of one 8x8 block vector (3*81 doubles) per step alone would be ~700 KiB here;
    # a leaked KSP or form per step, megabytes.
    assert growth < 1024, f"RSS grew by {growth} KiB over 350 steps"


def test_truncate_csv_drops_later_and_half_written_rows(shared_tmp):
    from rdgraph.output.checkpoint import truncate_csv

    path = shared_tmp / "d.csv"
    put(path, "step,t\n0,0.0\n1,0.1\n2,0.2\n3,0.")
    truncate_csv(path, 2, COMM)
    assert path.read_text() == "step,t\n0,0.0\n1,0.1\n2,0.2\n"
    COMM.Barrier()  # every rank has read it before rank 0 rewrites it
    put(path, "step,t\n0,0.0\n1,0.1\n2,0.2\n3,0.")
    truncate_csv(path, 9, COMM)  # the torn last row goes, whatever the step
    assert path.read_text() == "step,t\n0,0.0\n1,0.1\n2,0.2\n"
