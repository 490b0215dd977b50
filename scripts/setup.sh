#!/usr/bin/env bash
# Create .venv in the repository root (if missing) with a Python >= 3.12 and install
# rdgraph with its pinned dependencies, including the DOLFINx wheel, the test tools and the
# documentation tools (extras test and docs). Idempotent.
#
# The interpreter is taken from $RDGRAPH_PYTHON if set, else the first Python >= 3.12
# found among python3.13, python3.12, python3, python and pyenv's installed versions.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

is_usable() {  # a Python >= 3.12 that runs (pyenv shims of other versions fail here)
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidates=()
    [ -n "${RDGRAPH_PYTHON:-}" ] && candidates+=("$RDGRAPH_PYTHON")
    local name
    for name in python3.14 python3.13 python3.12 python3 python; do
        command -v "$name" >/dev/null 2>&1 && candidates+=("$(command -v "$name")")
    done
    local pyenv_root="${PYENV_ROOT:-}"
    if [ -z "$pyenv_root" ] && command -v pyenv >/dev/null 2>&1; then
        pyenv_root="$(pyenv root 2>/dev/null || true)"
    fi
    [ -z "$pyenv_root" ] && pyenv_root="$HOME/.pyenv"
    local dir
    for dir in $(ls -d "$pyenv_root"/versions/3.* 2>/dev/null | sort -rV); do
        [ -x "$dir/bin/python3" ] && candidates+=("$dir/bin/python3")
    done
    for dir in /usr/local/bin /usr/bin; do
        for name in python3.14 python3.13 python3.12; do
            [ -x "$dir/$name" ] && candidates+=("$dir/$name")
        done
    done
    local c
    for c in "${candidates[@]}"; do
        if is_usable "$c"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$venv/bin/python" ] || ! is_usable "$venv/bin/python"; then
    if ! python="$(find_python)"; then
        echo "rdgraph setup: no Python >= 3.12 found (the DOLFINx wheel needs it)." >&2
        echo "  Install one (e.g. 'pyenv install 3.12', or your distribution's python3.12" >&2
        echo "  with its venv module) or point RDGRAPH_PYTHON at it, then run this again." >&2
        exit 1
    fi
    echo "rdgraph setup: creating .venv with $python ($("$python" --version 2>&1))"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv"; then
        echo "rdgraph setup: '$python -m venv' failed; install the venv module" \
             "(Debian: apt-get install python3-venv) or set RDGRAPH_PYTHON." >&2
        exit 1
    fi
fi

# Reinstall only when the declared or pinned dependencies change (the install is editable).
stamp="$venv/.rdgraph-install-stamp"
want="$(cat "$root/pyproject.toml" "$root/scripts/constraints.txt" "$root/scripts/install.sh" \
    | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "rdgraph setup: installing rdgraph and its pinned dependencies into .venv"
    bash "$root/scripts/install.sh" --mode wheel --python "$venv/bin/python" --editable \
        --extras test,docs
    echo "$want" > "$stamp"
fi
