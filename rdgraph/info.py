"""``rdgraph info``: what a config would solve, without solving it.

Builds the graph, the mesh, the function space and the model's forms (which validates the
expressions exactly as ``rdgraph run`` does) but assembles none of the problem's matrices and
takes no time step (where the spectral solver's factorizations could be single precision, it
probes MUMPS with a 2×2 system). Reports the software stack, the problem size, the block
solver ``auto`` resolves to, and the
spectrum of the coupling's graph matrix. Its gap is the relaxation rate of the graph chain
alone (laplacian: vertex masses obey ``m' = -L m`` exactly); barriers of the potentials in x
slow the relaxation of the whole system, often by orders of magnitude.
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import MPI, versions
from rdgraph.discretization.meshes import build_mesh
from rdgraph.discretization.model import Model
from rdgraph.problem.config import Settings
from rdgraph.problem.graph import DENSE_LIMIT
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.problem.validation import (
    MESH_GDIM,
    check_expressions,
    check_schedule,
    disconnected_warning,
    graph_from_settings,
)
from rdgraph.solvers.block import resolve_solver, spectral_per_rank
from rdgraph.solvers.petsc import direct_package
from rdgraph.solvers.precision import SINGLE_PRECISION_MAX_CONDITION, mumps_single_precision_on
from rdgraph.solvers.spectral import coupling_modes, coupling_transform, factorization_count
from rdgraph.timestepping.linear import SCHEME_COEFFICIENTS

__all__ = ["describe", "format_info"]


def _spectral_gap(values: np.ndarray, components: int) -> float:
    # λ₂ of a connected graph; 0 when it falls apart (no exchange between the parts).
    positive = values[values > 0]
    return float(positive[0]) if components == 1 and positive.size else 0.0


def describe(settings: Settings, comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """Versions, sizes, solver choice and graph spectra of ``settings`` (collective).

    Raises:
        InputError: The graph, mesh file or an expression is invalid (on every rank).
    """
    import petsc4py

    graph = graph_from_settings(settings)
    if settings.mesh.shape in MESH_GDIM:
        # Expression errors before the first collective, as in Simulation.
        check_expressions(settings, graph, MESH_GDIM[settings.mesh.shape])
    mesh = build_mesh(settings.mesh, comm)
    model = Model(mesh, graph, settings.model, settings.space)
    tdim = mesh.topology.dim
    index_map = model.V.dofmap.index_map
    dofs = index_map.size_global * model.V.dofmap.index_map_bs

    equal = model.shared_potential  # what BlockOperators.equal_vertex_operators uses
    exact = equal and model.coupling == "laplacian"
    # As the time step's solver counts its factorizations (BDF2's first step aside).
    # The whole spectrum only where it is cheap: product graphs (from the factors, any N) and
    # small graphs; a large sparse graph has its Fiedler value from a sparse eigensolver.
    whole = graph.factors is not None or graph.n <= DENSE_LIMIT
    laplacian_values = graph.eigenvalues() if whole else None
    # The spectral solver's modes (O(N + E) for any graph), as BlockSolver takes them.
    transform = coupling_transform(graph, model.coupling, model.gibbs_integrals)
    exact = exact and transform.exact
    coefficients = SCHEME_COEFFICIENTS.get(settings.time.scheme)
    factorizations = None if coefficients is None else factorization_count(
        transform.values, coefficients.mass, coefficients.operator * settings.time.dt,
        model.same_stiffness and transform.exact)
    kind, inner = resolve_solver(settings.solver, graph.n, dofs, exact, tdim, comm.size,
                                 factorizations)
    solver = {"type": kind, "configured": settings.solver.type}
    if kind == "direct":
        solver["package"] = direct_package()
    if kind == "spectral":
        per_rank = spectral_per_rank(settings.solver.scalar_layout, inner, comm.size)
        solver.update(inner=inner, exact=exact,
                      scalar_layout="per-rank" if per_rank else "distributed")
        if inner == "lu" and not exact:
            # Factorizations that precondition: their precision (auto also needs the
            # operators' condition estimate, known only once they are assembled).
            setting = settings.solver.factorization_precision
            solver["factorization_precision"] = setting
            if setting != "double":
                solver["mumps_single_precision"] = mumps_single_precision_on(comm)

    components = len(model.components)
    values = laplacian_values
    info = {
        "versions": {**versions(), "petsc4py": petsc4py.__version__},
        "ranks": comm.size,
        "mesh": {
            "shape": settings.mesh.shape,
            "file": settings.mesh.file,
            "gdim": mesh.geometry.dim,
            "cells": mesh.topology.index_map(tdim).size_global,
            "vertices": mesh.topology.index_map(0).size_global,
        },
        "degree": settings.space.degree,
        "dofs_per_vertex": dofs,
        "graph": {"kind": settings.graph.kind, "vertices": graph.n,
                  "edges": graph.num_edges, "components": components},
        "graph_warning": disconnected_warning(graph, model.components),
        "unknowns": dofs * graph.n,
        "coupling": model.coupling,
        "scheme": settings.time.scheme,
        "dt": settings.time.dt,
        "steps": settings.num_steps,
        "beta": _beta(settings),
        "solver": solver,
        "laplacian_eigenvalues": None if values is None else [float(v) for v in values],
        "spectral_gap": (_spectral_gap(values, components) if values is not None
                         else graph.fiedler_value()),
    }
    if model.coupling == "gibbs" and graph.n <= DENSE_LIMIT:
        # The vertex chain the spectral solver uses: exact for potentials V + c_g.
        chain, _, _ = coupling_modes(graph, "gibbs", model.gibbs_integrals)
        info["gibbs_chain_eigenvalues"] = [float(v) for v in chain]
        info["gibbs_chain_gap"] = _spectral_gap(chain, components)
        info["gibbs_vertex_fractions"] = [float(f) for f in model.gibbs_fractions]
    return info


def _format_beta(beta: float | dict) -> str:
    if not isinstance(beta, dict):
        return f"temperature: beta = {beta:g}"
    return (f"temperature schedule: beta = {beta['schedule']!r}, from {beta['initial']:g}, "
            f"between {beta['smallest']:g} and {beta['largest']:g} over the run (the gibbs "
            f"figures below are at t = 0)")


def _numbers(values: list[float], limit: int) -> str:
    shown = " ".join(f"{v:.6g}" for v in values[:limit])
    if len(values) > limit:
        shown += f" ... {values[-1]:.6g} ({len(values)} in all)"
    return shown


def _gap(gap: float) -> str:
    if gap == 0.0:
        return "0 (graph not connected: no exchange between its components)"
    return (f"{gap:.6g} (1/gap = {1 / gap:.4g}: the relaxation time of the graph chain alone; "
            f"barriers of V_g in x can make the run's time to equilibrium far longer)")


def _precision(solver: dict) -> str:
    """The precision the spectral solver's preconditioning factorizations get."""
    setting = solver["factorization_precision"]
    if setting == "double":
        return "double precision"
    if not solver["mumps_single_precision"]:
        if setting == "single":
            return "single precision, but no single-precision MUMPS here (a run stops: input error)"
        return "double precision (auto: no single-precision MUMPS here)"
    if setting == "single":
        return "single precision (MUMPS)"
    return (f"single precision (MUMPS) where the condition estimate is at most "
            f"{SINGLE_PRECISION_MAX_CONDITION:g}, else double (auto)")


def _beta(settings: Settings) -> float | dict:
    """``model.beta``, or for a schedule its text and range over the run."""
    schedule = check_schedule(settings)
    if schedule is None:
        return BetaSchedule(settings.model.beta)(0.0)
    low, high = schedule.check(settings.t_stop, "the run's end")
    return {"schedule": schedule.describe(), "initial": schedule(0.0), "smallest": low,
            "largest": high}


def format_info(info: dict, max_values: int = 16) -> str:
    """The text ``rdgraph info`` prints."""
    v, m, g, s = info["versions"], info["mesh"], info["graph"], info["solver"]
    where = f" from {m['file']}" if m["file"] else ""
    if s["type"] == "direct":
        how = f"LU of the monolithic block matrix with {s['package']}"
    elif s["type"] == "spectral":
        how = (f"graph-spectral, scalar solves {s['inner']}, "
               + ("exact (one pass)" if s["exact"] else "preconditioning GMRES"))
    else:
        how = "on the assembled block matrix"
    if "factorization_precision" in s:
        how += f"; factorizations: {_precision(s)}"
    lines = [
        f"rdgraph {v['rdgraph']}, DOLFINx {v['dolfinx']}, PETSc {v['petsc']}, "
        f"petsc4py {v['petsc4py']}, mpi4py {v['mpi4py']}, numpy {v['numpy']}, "
        f"Python {v['python']}",
        f"MPI: {' '.join(v['mpi'].split())}; {info['ranks']} rank(s)",
        f"mesh: {m['shape']}{where}, {m['gdim']}-D, {m['cells']} cells, "
        f"{m['vertices']} vertices",
        f"space: Lagrange P{info['degree']}, {info['dofs_per_vertex']} dofs per graph vertex",
        f"graph: {g['kind']}, {g['vertices']} vertices, {g['edges']} edges, "
        f"{g['components']} component(s)",
        f"unknowns: {info['unknowns']} = {g['vertices']} x {info['dofs_per_vertex']}",
        f"model: {info['coupling']} coupling, {info['scheme']}, dt = {info['dt']:g}, "
        f"{info['steps']} steps",
        _format_beta(info["beta"]),
        f"solver: {s['type']} (configured: {s['configured']}): {how}",
        "Laplacian eigenvalues: " + (
            _numbers(info["laplacian_eigenvalues"], max_values)
            if info["laplacian_eigenvalues"] is not None
            else "not formed (a large graph without product structure)"),
        f"spectral gap: {_gap(info['spectral_gap'])}",
    ]
    if g["components"] > 1:
        lines.append(f"warning: {info['graph_warning']}")
    if "gibbs_chain_eigenvalues" in info:
        lines += [
            "gibbs vertex chain (rates w_gh sqrt(pi_h/pi_g), pi_g = int exp(-V_g/beta)) "
            f"eigenvalues: {_numbers(info['gibbs_chain_eigenvalues'], max_values)}",
            f"gibbs chain gap: {_gap(info['gibbs_chain_gap'])}",
            f"Gibbs vertex fractions: {_numbers(info['gibbs_vertex_fractions'], max_values)}"
            + (" (of the whole graph; a run shares each component's initial mass within "
               "the component)" if g["components"] > 1 else ""),
        ]
    return "\n".join(lines)
