#!/usr/bin/env bash
# Install rdgraph into an existing Python environment, in one of two modes:
#
#   wheel   (default) DOLFINx, PETSc and MPICH come from the pinned binary wheel
#           dolfinx-solver-real (extra "wheel"); every dependency is pinned by
#           scripts/constraints.txt. What scripts/setup.sh does in .venv.
#   system  DOLFINx, petsc4py and mpi4py are already there (the official DOLFINx Docker
#           image, conda, Spack, a source build): they must import, and pip must not
#           install a second DOLFINx, PETSc or MPI, nor upgrade the numpy they were built
#           against. Every distribution already installed is pinned to its installed
#           version, so pip only adds what is missing (sympy, matplotlib, tomli-w, gmsh, ...).
#
# Usage: scripts/install.sh [--mode wheel|system] [--python PYTHON] [--editable]
#                           [--extras test,...] [-- PIP_ARGS...]
#   --python    the interpreter of the target environment (default: python3)
#   --editable  pip install -e (a development checkout)
#   --extras    optional dependency groups besides the mode's own (default: test)
#   PIP_ARGS    passed to pip install, e.g. -- --dry-run --report report.json
#
# The Dockerfile (docker/Dockerfile) runs: scripts/install.sh --mode system --python python3
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=wheel
python=python3
editable=()
extras=test
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode="${2:?--mode needs wheel or system}"; shift 2 ;;
        --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
        --editable) editable=(-e); shift ;;
        --extras) extras="${2-}"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "rdgraph install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

pip=("$python" -m pip install --disable-pip-version-check)
case "$mode" in
    wheel)
        groups="wheel${extras:+,$extras}"
        exec "${pip[@]}" --quiet -c "$root/scripts/constraints.txt" \
            "${editable[@]}" "$root[$groups]" "$@"
        ;;
    system) ;;
    *) echo "rdgraph install: --mode must be wheel or system, not '$mode'" >&2; exit 2 ;;
esac

# system: the environment must already provide DOLFINx 0.11 with petsc4py and mpi4py.
# (dolfinx_solver first, as rdgraph.compat does, in case it is the wheel after all.)
if ! "$python" - <<'EOF'
import sys
try:
    import dolfinx_solver  # noqa: F401
except ImportError:
    pass
try:
    from mpi4py import MPI  # noqa: F401
    from petsc4py import PETSc  # noqa: F401
    import dolfinx
except ImportError as e:
    sys.exit(f"rdgraph install: --mode system needs DOLFINx, petsc4py and mpi4py in "
             f"{sys.executable}: {e}")
if not dolfinx.__version__.startswith("0.11"):
    sys.exit(f"rdgraph install: rdgraph needs DOLFINx 0.11, {sys.executable} has "
             f"{dolfinx.__version__}")
print(f"rdgraph install: using DOLFINx {dolfinx.__version__}, PETSc "
      f"{'.'.join(map(str, PETSc.Sys.getVersion()))} and "
      f"{MPI.Get_library_version().split(chr(10))[0].strip()} from {sys.executable}")
EOF
then
    exit 1
fi

pins="$(mktemp "${TMPDIR:-/tmp}/rdgraph-pins.XXXXXX")"
trap 'rm -f "$pins"' EXIT
"$python" - "$pins" <<'EOF'
import re
import sys
from importlib import metadata

pins = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name and re.sub(r"[-_.]+", "-", name).lower() != "rdgraph":
        pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
with open(sys.argv[1], "w") as f:
    f.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
EOF
"${pip[@]}" -c "$pins" "${editable[@]}" "$root${extras:+[$extras]}" "$@"
