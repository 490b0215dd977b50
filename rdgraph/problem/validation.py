"""Checks of a config's content beyond its schema: the graph and the expressions it names.

Pure Python, identical on every rank: a bad graph file or expression is reported before the
first collective operation (used by the simulation, ``rdgraph info``, sweeps and particles).
"""

from __future__ import annotations

from rdgraph.errors import InputError
from rdgraph.problem.config import ModelSettings, Settings
from rdgraph.problem.expressions import Expression, parse
from rdgraph.problem.graph import Graph, build_graph

__all__ = ["MESH_GDIM", "check_expressions", "graph_from_settings", "parse_per_vertex"]

#: The geometric dimension of the built-in mesh shapes (a mesh file's is known when read).
MESH_GDIM = {"interval": 1, "rectangle": 2, "box": 3}


def graph_from_settings(settings: Settings) -> Graph:
    """The graph described by ``[graph]`` (pure Python, identical on every rank)."""
    s = settings.graph
    return build_graph(
        s.kind, n=s.n, dim=s.dim, shape=s.shape, weight=s.weight, p=s.p, edges=s.edges,
        file=s.file, seed=s.seed,
    )


def parse_per_vertex(
    settings: ModelSettings, key: str, n: int, variables: tuple[str, ...], gdim: int, default
) -> list[Expression] | Expression | None:
    """One expression in ``g`` or a list of ``n`` expressions, from ``model.key(s)``.

    Args:
        settings: The ``[model]`` settings.
        key: "potential", "initial" or "source".
        n: The number of vertices.
        variables: The variables the expression may use ("x", "g", "t").
        gdim: The geometric dimension (components of ``x``).
        default: The expression text when neither key is set, or ``None`` for no expression.

    Raises:
        InputError: A list of the wrong length or an invalid expression.
    """
    single, many = getattr(settings, key), getattr(settings, key + "s")
    if many is not None:
        if len(many) != n:
            raise InputError(f"model.{key}s has {len(many)} entries but the graph has {n} vertices")
        return [
            parse(s, variables=tuple(v for v in variables if v != "g"), gdim=gdim,
                  what=f"model.{key}s[{i}]")
            for i, s in enumerate(many)
        ]
    if single is None:
        return None if default is None else parse(default, variables=variables, gdim=gdim)
    return parse(single, variables=variables, gdim=gdim, what=f"model.{key}")


def check_expressions(settings: Settings, graph: Graph, gdim: int) -> None:
    """Parse every expression of ``[model]``; raise :class:`InputError` for the first bad one."""
    model = settings.model
    parse_per_vertex(model, "potential", graph.n, ("x", "g"), gdim, "0")
    parse_per_vertex(model, "initial", graph.n, ("x", "g"), gdim, "1")
    parse_per_vertex(model, "source", graph.n, ("x", "g", "t"), gdim, None)
