"""How much memory a config needs at least, checked before anything is allocated.

A problem of N graph vertices on a mesh with P dofs has N × P unknowns. Each costs at least
:data:`BYTES_PER_UNKNOWN` bytes: the state and the work vectors of a time step (a handful of
doubles) and the rows of the assembled operators (7 nonzeros of a P1 triangle mesh at 12 bytes
each, more in 3-D, for higher degrees and for the factorization). A size whose lower bound
already exceeds the physical memory of the machines of the job cannot run: it is refused with
exit status 2 and the estimate, instead of a ``MemoryError`` minutes later.
"""

from __future__ import annotations

import math
import os
import socket
import types

from rdgraph.errors import InputError

__all__ = ["BYTES_PER_UNKNOWN", "check_memory", "estimate", "physical_memory"]

BYTES_PER_UNKNOWN = 100


def _vertices(settings) -> int | None:
    """The graph's number of vertices, from the settings alone (None: unknown)."""
    try:
        return _count_vertices(settings.graph)
    except (TypeError, ValueError, IndexError):  # invalid values: the graph reports them
        return None


def _count_vertices(g) -> int | None:
    if g.kind == "hypercube" and g.dim is not None:
        return 2 ** min(int(g.dim), 64)
    if g.kind == "hamming" and g.dim is not None and g.choices is not None:
        return int(g.choices) ** min(int(g.dim), 64)
    if g.kind == "product" and isinstance(g.factors, list) and g.factors:
        counts = [_count_vertices(types.SimpleNamespace(
            kind=f.get("kind"), dim=f.get("dim"), shape=f.get("shape"), n=f.get("n"),
            edges=f.get("edges"), choices=f.get("choices"), factors=None))
            for f in g.factors if isinstance(f, dict)]
        return None if None in counts or not counts else math.prod(counts)
    if g.kind == "grid" and g.shape is not None:
        return int(g.shape[0]) * int(g.shape[1])
    if g.n is not None:
        return int(g.n)
    if g.kind == "edges" and g.edges:
        return len(g.edges) + 1  # at most: a connected graph of these edges
    return None


def _dofs(settings) -> int | None:
    """Lagrange dofs of a built-in mesh, ``Π (degree × cells_i + 1)`` (None: a mesh file)."""
    m = settings.mesh
    if m.shape == "file" or not m.cells:
        return None
    try:
        k = int(settings.space.degree)
        return math.prod(k * int(c) + 1 for c in m.cells)
    except (TypeError, ValueError):
        return None


def estimate(settings) -> tuple[int, int, int] | None:
    """``(dofs per vertex, graph vertices, bytes)``, a lower bound; None if unknown."""
    dofs, vertices = _dofs(settings), _vertices(settings)
    if dofs is None or vertices is None:
        return None
    return dofs, vertices, dofs * vertices * BYTES_PER_UNKNOWN


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _job_memory(comm) -> int | None:
    """The physical memory of the machines of ``comm``, each host counted once (collective)."""
    hosts = dict(comm.allgather((socket.gethostname(), physical_memory())))
    if any(memory is None for memory in hosts.values()):
        return None
    return sum(hosts.values())


def _format(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} PB"  # pragma: no cover


def check_memory(settings, comm) -> None:
    """Refuse a problem whose memory estimate exceeds the job's machines (collective).

    Raises:
        InputError: On every rank, with the estimate and the memory available.
    """
    sizes = estimate(settings)
    if sizes is None:
        return
    available = _job_memory(comm)
    dofs, vertices, needed = sizes
    if available is not None and needed > available:
        raise InputError(
            f"the problem needs at least {_format(needed)} of memory ({dofs} dofs per vertex x "
            f"{vertices} graph vertices x {BYTES_PER_UNKNOWN} bytes), more than the "
            f"{_format(available)} of physical memory of the machines of this run; "
            "reduce mesh.cells, space.degree or the graph"
        )
