#!/usr/bin/env bash
# Set up .venv and build the documentation site offline into docs/_build/html, with
# warnings as errors. The build runs the example gallery (examples/plot_*.py, a few minutes
# at most); extra arguments go to sphinx-build, e.g. -D plot_gallery=0 to render the
# examples without running them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# Examples run in this one process: keep them off any MPI job that launched the script.
unset PMI_RANK PMI_SIZE PMI_FD PMI_PORT PMI_ID PMIX_RANK
export MPLBACKEND=Agg
exec "$root/.venv/bin/python" -m sphinx -W --keep-going -b html "$@" docs docs/_build/html
