"""The problem as the user states it: settings, graphs and expressions.

Pure Python: importing this package does not import DOLFINx, PETSc, MPI or UFL (an
import-linter contract in ``pyproject.toml`` and ``tests/test_architecture.py`` check it).
"""

from rdgraph.problem.config import Scheme, Settings, load_settings, settings_from_dict
from rdgraph.problem.graph import Graph, build_graph
from rdgraph.problem.validation import check_expressions, graph_from_settings

__all__ = [
    "Graph",
    "Scheme",
    "Settings",
    "build_graph",
    "check_expressions",
    "graph_from_settings",
    "load_settings",
    "settings_from_dict",
]
