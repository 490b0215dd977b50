"""The package's layering: import-linter contracts, no cycles, no hidden imports, a pure
problem layer. The checks read files, not a distributed state: they run serially only (and
were they run under ``mpiexec``, rank 0 checks and every rank gets its verdict)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import serial_only

from rdgraph.compat import MPI

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rdgraph"
COMM = MPI.COMM_WORLD
pytestmark = serial_only
# What the problem layer must work without.
FEM_MODULES = ("dolfinx", "dolfinx_solver", "petsc4py", "mpi4py", "ufl", "basix", "ffcx")


def on_rank_0(check) -> str:
    """``check()`` on rank 0 (it returns a failure message or ""), the message on every rank."""
    message = None
    if COMM.rank == 0:
        try:
            message = check()
        except Exception as e:  # noqa: BLE001 - reported on every rank, not raised on one
            message = f"{type(e).__name__}: {e}"
    return COMM.bcast(message, root=0)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _lint_imports() -> str:
    executable = Path(sys.executable).parent / "lint-imports"
    command = [str(executable)] if executable.exists() else [shutil.which("lint-imports") or ""]
    if not command[0]:
        return "lint-imports not found: install the test extra (pip install -e .[test])"
    done = subprocess.run([*command, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return "" if done.returncode == 0 else done.stdout[-4000:] + done.stderr[-2000:]


def test_import_linter_contracts_are_kept():
    """The layers, independence and forbidden-import contracts of pyproject.toml."""
    message = on_rank_0(_lint_imports)
    assert not message, message


def _cycles() -> str:
    import grimp

    graph = grimp.build_graph("rdgraph", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules)
             for m in modules}
    # Tarjan's strongly connected components: a component of more than one module (or a
    # module importing itself) is a cycle.
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules) + 100))
    for v in modules:
        if v not in index:
            visit(v)
    return "; ".join(" <-> ".join(c) for c in found)


def test_no_import_cycle():
    """No module imports, directly or through others, a module that imports it."""
    message = on_rank_0(_cycles)
    assert not message, f"import cycles: {message}"


def _function_level_imports() -> str:
    found = []
    for name, path in _modules().items():
        if name == "rdgraph.cli" or name.startswith("rdgraph.cli."):
            continue  # the command line's lazy subcommand table may import on demand
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    targets = ["." * inner.level + (inner.module or "")]
                elif isinstance(inner, ast.Import):
                    targets = [alias.name for alias in inner.names]
                else:
                    continue
                for target in targets:
                    if target.startswith((".", "rdgraph")):
                        found.append(f"{path.relative_to(ROOT)}:{inner.lineno} imports {target} "
                                     f"inside {node.name}()")
    return "\n".join(sorted(set(found)))


def test_no_rdgraph_import_inside_a_function():
    """Imports inside functions hide cycles from import-linter: only the CLI may have them."""
    message = on_rank_0(_function_level_imports)
    assert not message, message


def _private_imports() -> str:
    found = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        mine = name.split(".")[:2]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "rdgraph"):
                continue
            if node.module.split(".")[:2] == mine:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and alias.name != "__version__":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports "
                                 f"{alias.name} from {node.module}")
    return "\n".join(found)


def test_no_private_name_imported_across_subpackages():
    message = on_rank_0(_private_imports)
    assert not message, message


PURE_SCRIPT = textwrap.dedent("""
    import sys

    BLOCKED = {blocked!r}

    class Refuse:
        # Stands for an installation without DOLFINx, PETSc, MPI and UFL.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed here")
            return None

    sys.meta_path.insert(0, Refuse())
    try:
        import dolfinx  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the finder did not block dolfinx")

    import rdgraph.problem
    from rdgraph.errors import InputError
    from rdgraph.problem import check_expressions, graph_from_settings, load_settings
    from rdgraph.problem.validation import MESH_GDIM

    settings = load_settings({config!r}, ["time.dt=0.005", "graph.dim=2"])
    graph = graph_from_settings(settings)
    check_expressions(settings, graph, MESH_GDIM[settings.mesh.shape])
    assert graph.n == 4 and settings.time.method.linear, (graph.n, settings.time.scheme)
    default = load_settings()
    assert default.num_steps > 0
    bad = load_settings({config!r}, ["model.potential='x[0] +'"])
    try:
        check_expressions(bad, graph_from_settings(bad), 2)
    except InputError as e:
        assert "model.potential" in str(e), e
    else:
        raise SystemExit("a bad expression was accepted")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("pure")
""")


def _pure_problem_layer() -> str:
    script = PURE_SCRIPT.format(blocked=set(FEM_MODULES),
                                config=str(ROOT / "examples" / "nas_toy.toml"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPI"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or done.stdout.strip() != "pure":
        return f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return ""


def test_problem_layer_imports_and_validates_without_dolfinx():
    """``rdgraph.problem`` loads and checks a config where importing DOLFINx, PETSc, MPI or
    UFL raises ImportError."""
    message = on_rank_0(_pure_problem_layer)
    assert not message, message


@pytest.mark.parametrize("name", ["rdgraph.problem", "rdgraph.timestepping", "rdgraph.solvers",
                                  "rdgraph.output", "rdgraph.discretization"])
def test_subpackages_that_re_export_declare_all(name):
    """A subpackage ``__init__`` that imports names lists them in ``__all__``."""
    import importlib

    module = importlib.import_module(name)
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.asname or alias.name for node in tree.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported <= set(getattr(module, "__all__", ())), name
