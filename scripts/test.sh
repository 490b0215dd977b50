#!/usr/bin/env bash
# Set up .venv, run the whole test suite serially and on 2 MPI ranks, then build the
# documentation (scripts/docs.sh, which runs the example gallery). Extra arguments go to
# pytest (e.g. -k mass).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" || exit 1
cd "$root"
bin="$root/.venv/bin"
# A hang in a collective must not eat the CI budget.
limit="${RDGRAPH_TEST_TIMEOUT:-1800}"

echo "== rdgraph tests: serial =="
timeout "$limit" "$bin/python" -m pytest "$@"
serial=$?
echo "== rdgraph tests: mpiexec -n 2 =="
timeout "$limit" "$bin/mpiexec" -n 2 "$bin/python" -m pytest -p no:cacheprovider "$@"
parallel=$?
echo "== rdgraph docs: scripts/docs.sh =="
timeout "$limit" bash "$root/scripts/docs.sh"
docs=$?
echo "serial exit status $serial, 2-rank exit status $parallel, docs exit status $docs"
[ "$serial" -eq 0 ] && [ "$parallel" -eq 0 ] && [ "$docs" -eq 0 ]
