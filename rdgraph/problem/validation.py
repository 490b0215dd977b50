"""Checks of a config's content beyond its schema: the graph and the expressions it names.

Pure Python, identical on every rank: a bad graph file or expression is reported before the
first collective operation (used by the simulation, ``rdgraph info``, sweeps and particles).
"""

from __future__ import annotations

import numpy as np

from rdgraph.errors import InputError
from rdgraph.problem.config import EQUILIBRIUM, ModelSettings, Settings
from rdgraph.problem.data import VertexData, read_labels, read_vertex_data
from rdgraph.problem.expressions import Expression, parse
from rdgraph.problem.graph import Graph, build_graph, read_edge_file
from rdgraph.problem.schedule import BetaSchedule

__all__ = ["MESH_GDIM", "check_expressions", "check_schedule", "check_vertex_lists",
           "disconnected_warning",
           "graph_from_settings", "parse_per_vertex", "vertex_data"]

#: The geometric dimension of the built-in mesh shapes (a mesh file's is known when read).
MESH_GDIM = {"interval": 1, "rectangle": 2, "box": 3}


def graph_from_settings(settings: Settings) -> Graph:
    """The graph described by ``[graph]`` (pure Python, identical on every rank)."""
    s = settings.graph
    graph = build_graph(
        s.kind, n=s.n, dim=s.dim, shape=s.shape, weight=s.weight, p=s.p, edges=s.edges,
        file=s.file, seed=s.seed, choices=s.choices, factors=s.factors,
    )
    if isinstance(s.labels, str):
        return graph.with_labels(read_labels(s.labels, graph.n))
    if s.labels is not None:
        if len(s.labels) != graph.n:
            raise InputError(f"graph.labels has {len(s.labels)} entries but the graph has "
                             f"{graph.n} vertices")
        return graph.with_labels(s.labels)
    return graph


def vertex_data(settings: ModelSettings, graph: Graph) -> VertexData | None:
    """The table of ``[model] data`` for ``graph`` (``None`` when not set)."""
    if settings.data is None:
        return None
    return read_vertex_data(settings.data, graph.n, graph.labels)


def _graph_origin(settings: Settings) -> str:
    """Where the vertex count came from, for messages: the largest index of an edge list."""
    s = settings.graph
    if s.kind == "file" and s.file is not None:
        n, edges = read_edge_file(s.file)
        largest = max(max(g, h) for g, h, _ in edges)
        declared = f", and '# n = {n}' or graph.n adds vertices" if n > largest + 1 else ""
        return (f" (the largest vertex index in graph.file {s.file!r} is {largest}: vertices "
                f"0..{largest}{declared})")
    if s.kind == "edges" and s.edges:
        indices = [v for e in s.edges for v in e[:2]]
        return f" (the largest vertex index in graph.edges is {max(indices)})"
    return f" (graph.kind = {s.kind!r})"


def check_vertex_lists(settings: Settings, graph: Graph) -> None:
    """``model.potentials``, ``initials`` and ``sources`` have one entry per vertex.

    Raises:
        InputError: A list of the wrong length; the message says where the vertices came
            from (for an edge file, its largest vertex index).
    """
    for key in ("potentials", "initials", "sources"):
        values = getattr(settings.model, key)
        if values is not None and len(values) != graph.n:
            raise InputError(f"model.{key} has {len(values)} entries but the graph has "
                             f"{graph.n} vertices{_graph_origin(settings)}")
    chosen = settings.output.fields_vertices
    if isinstance(chosen, list) and max(chosen) >= graph.n:
        raise InputError(f"output.fields_vertices = {chosen!r}: vertex {max(chosen)} does not "
                         f"exist (the graph has {graph.n} vertices, 0..{graph.n - 1})")


def disconnected_warning(graph: Graph, components: list[np.ndarray] | None = None,
                         limit: int = 8) -> str | None:
    """A warning naming the components of a graph that is not connected, else ``None``."""
    components = graph.components() if components is None else components
    if len(components) == 1:
        return None

    def name(c: np.ndarray) -> str:
        shown = ", ".join(str(int(g)) for g in c[:limit])
        return "{" + shown + (f", ... ({c.size} vertices)" if c.size > limit else "") + "}"

    listed = "; ".join(name(c) for c in components[:limit])
    more = f"; ... ({len(components)} in all)" if len(components) > limit else ""
    return (f"the graph is not connected: {len(components)} components {listed}{more}. "
            f"No mass moves between them: each keeps its initial mass, and the Gibbs masses "
            f"are per component (check graph.edges / graph.file for a typo)")


def parse_per_vertex(
    settings: ModelSettings, key: str, n: int, variables: tuple[str, ...], gdim: int, default,
    data: VertexData | None = None,
) -> list[Expression] | Expression | None:
    """One expression in ``g`` or a list of ``n`` expressions, from ``model.key(s)``.

    Args:
        settings: The ``[model]`` settings.
        key: "potential", "initial" or "source".
        n: The number of vertices.
        variables: The variables the expression may use ("x", "g", "t").
        gdim: The geometric dimension (components of ``x``).
        default: The expression text when neither key is set, or ``None`` for no expression.
        data: The per-vertex table of ``model.data`` (its columns are ``name[g]``).

    Raises:
        InputError: A list of the wrong length or an invalid expression.
    """
    single, many = getattr(settings, key), getattr(settings, key + "s")
    columns = None if data is None else data.columns
    source = None if data is None else f"model.data {data.source!r}"
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
    return parse(single, variables=variables, gdim=gdim, what=f"model.{key}", data=columns,
                 data_source=source)


def check_schedule(settings: Settings) -> BetaSchedule | None:
    """Check a temperature schedule ``model.beta`` (pure Python, identical on every rank).

    Returns:
        The schedule, or ``None`` when β is constant (a number, a table of one value, an
        expression without ``t``).

    Raises:
        InputError: An invalid expression or table, a β that is not positive and finite
            somewhere on ``[0, t_end]`` (``[0, t_max]`` for ``t_end = "equilibrium"``), or a
            scheme or coupling that takes no schedule.
    """
    schedule = BetaSchedule(settings.model.beta)
    if not schedule.varies:
        return None
    time = settings.time
    schedule.check(settings.t_stop,
                   "time.t_max" if time.t_end == EQUILIBRIUM else "time.t_end")
    if not time.method.linear or settings.model.coupling == "upwind":
        # The Newton schemes keep β in their residuals and Jacobians as a number.
        raise InputError(
            f"model.beta = {settings.model.beta!r} is a schedule: schedules take the linear "
            f"schemes (implicit-euler, crank-nicolson, bdf2) with coupling = 'laplacian' or "
            f"'gibbs', not time.scheme = {time.scheme!r} with coupling = "
            f"{settings.model.coupling!r}; give model.beta as a number")
    return schedule


def check_expressions(settings: Settings, graph: Graph, gdim: int) -> None:
    """Parse every expression of ``[model]``; raise :class:`InputError` for the first bad one."""
    check_schedule(settings)
    check_vertex_lists(settings, graph)
    model = settings.model
    data = vertex_data(model, graph)
    parse_per_vertex(model, "potential", graph.n, ("x", "g"), gdim, "0", data)
    parse_per_vertex(model, "initial", graph.n, ("x", "g"), gdim, "1", data)
    parse_per_vertex(model, "source", graph.n, ("x", "g", "t"), gdim, None, data)
