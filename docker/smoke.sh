#!/usr/bin/env bash
# Build the rdgraph image and check it: versions, the default problem on 2 ranks, a short
# 3-D gmsh run, and a part of the test suite on 2 ranks, all inside the container.
# Usage: docker/smoke.sh [IMAGE_TAG]        (needs a Docker engine; run from anywhere)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-rdgraph:smoke}"
results="$(mktemp -d "${TMPDIR:-/tmp}/rdgraph-smoke.XXXXXX")"
chmod 777 "$results"   # the container's user may differ from ours
trap 'echo "smoke: results left in $results"' EXIT

step() { echo; echo "== smoke: $*"; }

step "build $tag"
docker build -f "$root/docker/Dockerfile" -t "$tag" "$root"

run() { docker run --rm -v "$results:/work/results" "$tag" "$@"; }

step "rdgraph info (versions, sizes, spectrum)"
run info

step "default problem on 2 ranks (t_end shortened)"
run mpirun -n 2 rdgraph run --out results/default --set time.t_end=1.0
for f in diagnostics.csv final.npz summary.json config.toml fields.bp; do
    [ -e "$results/default/$f" ] || { echo "smoke: missing results/default/$f" >&2; exit 1; }
done

step "3-D gmsh example on 2 ranks"
run mpirun -n 2 rdgraph run /opt/rdgraph/examples/gmsh_3d.toml --out results/gmsh_3d \
    --set time.t_end=0.2 --quiet
[ -s "$results/gmsh_3d/diagnostics.csv" ]

step "bad input exits with status 2"
status=0
run run --set time.dt=-1 > /dev/null 2>&1 || status=$?
[ "$status" -eq 2 ] || { echo "smoke: expected exit status 2, got $status" >&2; exit 1; }

step "tests on 2 ranks inside the container"
run mpirun -n 2 python3 -m pytest -q -p no:cacheprovider \
    /opt/rdgraph/tests/test_mesh_files.py /opt/rdgraph/tests/test_info.py \
    /opt/rdgraph/tests/test_fields_bp.py /opt/rdgraph/tests/test_identities.py

trap - EXIT
rm -rf "$results"
echo; echo "smoke: all passed ($tag)"
