#!/bin/bash
# Entry point of the rdgraph image: rdgraph's own arguments, or a program to run as given.
#   docker run IMAGE run CONFIG.toml              -> rdgraph run CONFIG.toml
#   docker run IMAGE mpirun -n 4 rdgraph run ...  -> mpirun -n 4 rdgraph run ...
#   docker run -it IMAGE bash                     -> a shell
set -e
# rdgraph's subcommands ("info" is also a program in the image), read from rdgraph/cli/__init__.py's
# SUBCOMMANDS table without importing rdgraph (which would load DOLFINx on every start).
commands="$(python3 - <<'EOF'
import ast
import importlib.util
from pathlib import Path

cli = Path(importlib.util.find_spec("rdgraph").submodule_search_locations[0]) / "cli" / "__init__.py"
for node in ast.parse(cli.read_text()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SUBCOMMANDS":
        print("run", *ast.literal_eval(node.value))
EOF
)"
first="${1-}"
if [ -z "$first" ] || [ "${first#-}" != "$first" ] || [[ " $commands " == *" $first "* ]]; then
    exec rdgraph "$@"
fi
if command -v "$first" > /dev/null 2>&1; then
    exec "$@"
fi
exec rdgraph "$@"
