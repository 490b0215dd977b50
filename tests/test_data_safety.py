"""A user's files are never deleted or mixed: --overwrite, locks, resume, refused input.

Every test runs in a scratch directory, serially and under ``mpiexec -n 2``.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import tomli_w
from conftest import make_config, put

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.output import rundir

COMM = MPI.COMM_WORLD


def files(root) -> dict:
    """Every file below ``root`` with its bytes (what must survive a refusal)."""
    COMM.Barrier()
    found = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file()}
    COMM.Barrier()  # read on every rank before any rank changes a file again
    return found


def user_files(folder) -> None:
    if COMM.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "thesis.tex").write_text("years of work\n")
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "measurements.csv").write_text("1,2,3\n")
    COMM.Barrier()


def config(tmp, **sections) -> str:
    return put(tmp / "c.toml", tomli_w.dumps(make_config(**sections)))


def rows(path) -> np.ndarray:
    lines = path.read_text().splitlines()
    return np.array([line.split(",") for line in lines[1:]], dtype=float)


# -- --overwrite -------------------------------------------------------------------------------
@pytest.mark.parametrize("out, cwd, why", [
    (".", "scratch", "current directory"),
    ("..", "scratch/inner", "current directory or one of its parents"),
    ("", "scratch", "current directory"),
    ("scratch", ".", "not created by rdgraph"),
])
def test_overwrite_refuses_what_is_not_a_run_directory(shared_tmp, monkeypatch, capsys, out,
                                                       cwd, why):
    c = config(shared_tmp)
    user_files(shared_tmp / "scratch")
    if COMM.rank == 0:
        (shared_tmp / "scratch" / "inner").mkdir(exist_ok=True)
    before = files(shared_tmp / "scratch")
    monkeypatch.chdir(shared_tmp / cwd)
    assert main(["run", c, "--out", out, "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert err.count("rdgraph: error:") == 1 and "--overwrite refused" in err, err
        assert why in err and "Traceback" not in err
    assert files(shared_tmp / "scratch") == before
    assert not list(shared_tmp.glob(".*rdgraph-*"))  # nothing renamed aside


def test_overwrite_refuses_a_symlink_and_keeps_its_target(shared_tmp, capsys):
    c = config(shared_tmp)
    out = shared_tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 0
    link = shared_tmp / "link"
    if COMM.rank == 0:
        link.symlink_to(out)
    before = files(out)
    assert main(["run", c, "--out", str(link), "--overwrite", "--quiet"]) == 2
    if COMM.rank == 0:
        assert "is a symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and files(out) == before


def test_overwrite_refuses_a_mount_point(shared_tmp, monkeypatch, capsys):
    # A fake mount point: the real one (a small tmpfs) is in test_data_safety_processes.py.
    c = config(shared_tmp)
    out = shared_tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 0
    before = files(out)
    monkeypatch.setattr(rundir, "_is_mount", lambda p: p == out.resolve())
    assert main(["run", c, "--out", str(out), "--overwrite", "--quiet"]) == 2
    if COMM.rank == 0:
        assert "is a mount point" in capsys.readouterr().err
    assert files(out) == before


def test_refusal_of_home_and_root():
    assert "root directory" in rundir.refusal(rundir.Path("/"))
    assert "home directory" in rundir.refusal(rundir.Path.home())


def test_overwrite_replaces_a_run_directory_whole(shared_tmp):
    c = config(shared_tmp)
    out = shared_tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 0
    if COMM.rank == 0:
        (out / "stale.txt").write_text("from the old run\n")
    COMM.Barrier()
    assert main(["run", c, "--out", str(out), "--overwrite", "--quiet",
                 "--set", "time.t_end=0.02"]) == 0
    assert not (out / "stale.txt").exists() and (out / rundir.MARKER).is_file()
    assert rows(out / "diagnostics.csv").shape[0] == 3
    assert [p.name for p in shared_tmp.iterdir() if p.name.startswith(".")] == []


def test_a_name_that_is_not_utf8_is_refused(shared_tmp, capsys):
    out = os.fsdecode(os.fsencode(str(shared_tmp)) + b"/bad\xff")
    assert main(["run", config(shared_tmp), "--out", out, "--quiet"]) == 2
    if COMM.rank == 0:
        assert "not valid UTF-8" in capsys.readouterr().err
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["c.toml"]


# -- one process per run directory ------------------------------------------------------------
def test_a_directory_in_use_is_refused_with_the_holder(shared_tmp, capsys):
    c = config(shared_tmp)
    out = shared_tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 0
    before = files(out)
    # Another holder: a second open file description conflicts even within one process.
    holder = rundir.lock_directory(out) if COMM.rank == 0 else None
    COMM.Barrier()
    try:
        for args in (["--out", str(out), "--overwrite"], ["--resume", str(out)]):
            assert main(["run", c, *args, "--quiet"]) == 2
            err = capsys.readouterr().err
            if COMM.rank == 0:
                assert f"run directory {str(out)!r} is in use" in err, err
                assert f"pid {os.getpid()}" in err
    finally:
        if holder is not None:
            holder.release()
    assert files(out) == before
    # Released (or its process killed): the directory is free again.
    assert main(["run", c, "--resume", str(out), "--quiet", "--set", "time.t_end=0.07"]) == 0


# -- resume -----------------------------------------------------------------------------------
def _interrupted_run(tmp, t_end="0.1", end="0.06"):
    """A run to ``end`` with checkpoints every 2 steps, as if stopped, and its config."""
    c = config(tmp, output={"checkpoint_every": 2, "fields_every": 0},
               time={"dt": 0.01, "t_end": float(t_end)},
               model={"potential": "(x[0] - 0.3*g)**2"})
    out = tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet", "--set", f"time.t_end={end}"]) == 0
    return c, out


def test_resume_keeps_good_rows_after_a_garbage_row(shared_tmp, capsys):
    c, out = _interrupted_run(shared_tmp)
    csv = out / "diagnostics.csv"
    lines = csv.read_text().splitlines(keepends=True)
    good = rows(csv)
    put(csv, "".join(lines[:3] + ["3,garbage,,\n"] + lines[3:]))
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert "1 row(s) cannot be parsed" in err and "line 4" in err, err
        assert (out / "diagnostics.csv.before-resume").exists()  # kept for the user to see
    result = rows(csv)
    assert np.array_equal(result[:, 0], np.arange(11))
    assert np.array_equal(result[:7], good)  # every good row, the ones after the bad one too


def test_resume_writes_back_a_missing_header(shared_tmp, capsys):
    c, out = _interrupted_run(shared_tmp)
    csv = out / "diagnostics.csv"
    header = csv.read_text().splitlines()[0]
    COMM.Barrier()  # every rank has read it before it goes
    if COMM.rank == 0:
        csv.unlink()
    COMM.Barrier()
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 0
    if COMM.rank == 0:
        assert "was missing" in capsys.readouterr().err
    text = csv.read_text().splitlines()
    assert text[0] == header
    assert [int(line.split(",")[0]) for line in text[1:]] == list(range(7, 11))


def test_resume_drops_later_rows_only_once_the_run_is_complete(shared_tmp):
    c, out = _interrupted_run(shared_tmp)
    csv = out / "diagnostics.csv"
    # Rows written after the newest checkpoint (step 6), as a kill leaves them.
    if COMM.rank == 0:
        with open(csv, "a") as f:
            f.write("7,0.07,1,1,1,1,0,0,0,1\n8,0.0")
    COMM.Barrier()
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 0
    assert np.array_equal(rows(csv)[:, 0], np.arange(11))
    assert not (out / "diagnostics.csv.before-resume").exists()


def _damage(path, **changes):
    COMM.Barrier()
    if COMM.rank == 0:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        data.update(changes)
        with open(path, "wb") as f:
            np.savez(f, **data)
    COMM.Barrier()


@pytest.mark.parametrize("damage, reason", [
    ("bytes", "is damaged or truncated"),
    ("step", "outside 0..10"),
    ("shape", "holds rho of shape"),
    ("nan", "not finite"),
])
def test_an_invalid_newest_checkpoint_falls_back_to_the_older_one(shared_tmp, capsys, damage,
                                                                  reason):
    c, out = _interrupted_run(shared_tmp)
    newest = out / "checkpoint-00000006.npz"
    if damage == "bytes":
        put(newest, "")
        if COMM.rank == 0:
            newest.write_bytes(np.random.default_rng(0).bytes(3000))
        COMM.Barrier()
    elif damage == "step":
        _damage(newest, step=np.array(-5))
    elif damage == "shape":
        with np.load(newest) as f:
            rho = f["rho"]
        _damage(newest, rho=rho[:, :-1])
    else:
        with np.load(newest) as f:
            rho = f["rho"].copy()
        rho[0, 0] = np.nan
        _damage(newest, rho=rho)
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert reason in err and "checkpoint-00000006.npz" in err, err
        assert "resuming from the older checkpoint" in err and "checkpoint-00000004.npz" in err
        assert "allow_pickle" not in err and "Traceback" not in err
    assert np.array_equal(rows(out / "diagnostics.csv")[:, 0], np.arange(11))


def test_no_valid_checkpoint_refuses_the_resume_and_changes_nothing(shared_tmp, capsys):
    c, out = _interrupted_run(shared_tmp)
    for path in sorted(out.glob("checkpoint-*.npz")):
        _damage(path, step=np.array(-5))
    before = files(out)
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert err.count("outside 0..10") == 2 and "no usable checkpoint" in err, err
    assert files(out) == before


# -- the environment --------------------------------------------------------------------------
def test_a_full_disk_while_checkpointing_exits_5_naming_the_last_good_one(shared_tmp,
                                                                         monkeypatch, capsys):
    from rdgraph.output import checkpoint

    real = checkpoint.save_npz

    def full(path, **arrays):
        if path.name >= "checkpoint-00000004.npz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, **arrays)

    monkeypatch.setattr(checkpoint, "save_npz", full)
    c = config(shared_tmp, output={"checkpoint_every": 2, "fields_every": 0},
               time={"dt": 0.01, "t_end": 0.1})
    out = shared_tmp / "run"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 5
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert err.count("rdgraph: environment failure:") == 1, err
        assert "No space left on device" in err and "checkpoint-00000004.npz" in err
        assert "last good checkpoint is" in err and "checkpoint-00000002.npz" in err
        assert "Traceback" not in err
    monkeypatch.setattr(checkpoint, "save_npz", real)
    assert main(["run", c, "--resume", str(out), "--quiet"]) == 0
    assert np.array_equal(rows(out / "diagnostics.csv")[:, 0], np.arange(11))


# -- input that makes the model meaningless ---------------------------------------------------
@pytest.mark.parametrize("model, message", [
    ({"initial": "0"}, "has total mass 0"),
    ({"initial": "x[0] - 0.5"}, "is negative at a node"),
    ({"initial": "-1"}, "is negative at a node"),
    ({"potential": "log(x[0]**2)"}, "is not finite (NaN or inf) at a node or a quadrature"),
    ({"potential": "log((x[0] - 0.5)**2)"}, "is not finite (NaN or inf)"),
    ({"source": "1/(x[0] - 0.5)"}, "model.source '1/(x[0] - 0.5)' is not finite"),
])
def test_meaningless_model_is_refused_with_status_2(shared_tmp, capsys, model, message):
    # The default domain of the issue: x[0] = 0 is a node, 1e-17 off in floating point.
    c = config(shared_tmp, model=model,
               mesh={"cells": [64, 64], "lower": [-2.0, -2.0], "upper": [2.0, 2.0]})
    out = shared_tmp / "never"
    assert main(["run", c, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("setting", ["mesh.cells=[100000, 100000]", "graph.n=1000000000"])
def test_a_size_that_cannot_fit_is_refused_before_it_is_allocated(shared_tmp, capsys, setting):
    out = shared_tmp / "never"
    assert main(["run", config(shared_tmp), "--out", str(out), "--quiet", "--set", setting]) == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert "the problem needs at least" in err and "physical memory" in err, err
    assert not out.exists()


def test_a_second_sweep_into_a_folder_in_use_is_refused(shared_tmp, capsys):
    config(shared_tmp)
    sweep = put(shared_tmp / "s.toml", 'base = "c.toml"\n[parameters]\n"graph.weight" = [1.0]\n')
    out = shared_tmp / "sweep"
    if COMM.rank == 0:
        out.mkdir()
    COMM.Barrier()
    holder = rundir.lock_directory(out) if COMM.rank == 0 else None
    COMM.Barrier()
    try:
        assert main(["sweep", sweep, "--out", str(out), "--quiet"]) == 2
        if COMM.rank == 0:
            assert f"sweep folder {str(out)!r} is in use" in capsys.readouterr().err
    finally:
        if holder is not None:
            holder.release()
    assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK]
    assert main(["sweep", sweep, "--out", str(out), "--quiet"]) == 0
    assert (out / "weight=1" / rundir.MARKER).is_file()
