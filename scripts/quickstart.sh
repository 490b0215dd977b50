#!/usr/bin/env bash
# Set up .venv and run the built-in default problem on 2 MPI ranks.
# Extra arguments go to 'rdgraph run' (e.g. --out DIR, --set time.t_end=1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/mpiexec" -n 2 "$root/.venv/bin/rdgraph" run "$@"
