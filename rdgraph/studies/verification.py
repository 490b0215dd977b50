"""Verification studies: observed convergence orders against exact solutions, long-time checks.

Exact solutions are (1) manufactured ones, built with sympy so that the source ``f_g`` of
either coupling is derived symbolically and passed to a normal :class:`Simulation` as config
strings, and (2) the cosine-mode solution of docs/model.md (``V = 0``, laplacian). Errors at
``t_end`` are measured in a Lagrange space of degree ``k + 3``, summed over vertices and
reduced over ranks. Everything is collective; only rank 0 prints and writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ufl

from rdgraph.compat import MPI, dolfinx
from rdgraph.discretization.ufl_expressions import to_ufl
from rdgraph.problem.config import Settings, settings_from_dict
from rdgraph.problem.expressions import parse
from rdgraph.simulation import Simulation
from rdgraph.studies.jko_study import jko_vs_implicit_euler
from rdgraph.timestepping.linear import SCHEME_COEFFICIENTS

__all__ = [
    "DOC_HEAD",
    "EDGES",
    "FAMILIES",
    "TOLERANCE",
    "Verification",
    "ExactSolution",
    "Study",
    "cosine_mode",
    "errors",
    "gibbs_state",
    "gibbs_state_study",
    "gibbs_study",
    "manufactured",
    "mass_study",
    "observed_orders",
    "positivity_study",
    "run_all",
    "semidiscrete_time_studies",
    "space_study",
    "time_study",
]

fem = dolfinx.fem

# A triangle with unequal weights: every vertex has two neighbours of different weight.
EDGES = [[0, 1, 1.0], [1, 2, 2.0], [0, 2, 0.5]]
_LAPLACIAN = np.array([[1.5, -1.0, -0.5], [-1.0, 3.0, -2.0], [-0.5, -2.0, 2.5]])


@dataclass(frozen=True)
class ExactSolution:
    """An exact solution of the model on ``(0, 1)^d`` as parser strings, one per vertex."""

    name: str
    coupling: str
    beta: float
    dim: int
    potentials: list[str]
    exact: list[str]  # rho_g(x, t)
    sources: list[str] | None
    initial: list[str] | None = None  # ρ_g(x, 0) when it is not ``exact`` at t = 0

    def initials(self) -> list[str]:
        if self.initial is not None:
            return self.initial
        return [re.sub(r"\bt\b", "(0)", s) for s in self.exact]


def _to_parser(expr) -> str:
    import sympy

    text = sympy.sstr(expr)
    return re.sub(r"\bx(\d)\b", r"x[\1]", text)


def manufactured(coupling: str, dim: int, beta: float = 0.5, affine: bool = False
                 ) -> ExactSolution:
    """Smooth positive ``ρ_g(x, t)`` with zero normal flux, unequal ``V_g``; ``f_g`` by sympy.

    ``ρ_g = a_g + b_g cos(t + φ_g) Π cos(π x_i)`` and ``V_g = s_g Σ cos(π x_i)``: both have
    zero normal derivative on the walls of the unit cube, so the exact flux vanishes there.

    With ``affine``, ``ρ_g = a_g + (b_g + c_g t) Π cos(π x_i)``: affine in ``t``, and so is
    ``f_g`` (the operators do not depend on ``t``). Implicit Euler, Crank–Nicolson and BDF2
    (with its implicit-Euler start) reproduce functions affine in time exactly, so the error
    of a run is the spatial error alone, whatever ``τ``: a clean space study for every scheme.
    """
    import sympy as sp

    x = sp.symbols("x0:3")[:dim]
    t = sp.Symbol("t")
    b_ = sp.Rational(str(beta))
    a, b, phi, s = [1, sp.Rational(3, 2), sp.Rational(5, 4)], [sp.Rational(1, 2),
                    sp.Rational(1, 3), sp.Rational(1, 4)], [0, 1, 2], [sp.Rational(1, 2),
                    -sp.Rational(1, 4), 1]
    slope = [sp.Rational(2, 5), -sp.Rational(3, 10), sp.Rational(1, 5)]
    mode = sp.Mul(*[sp.cos(sp.pi * xi) for xi in x])
    if affine:
        rho = [a[g] + (b[g] + slope[g] * t) * mode for g in range(3)]
    else:
        rho = [a[g] + b[g] * sp.cos(t + phi[g]) * mode for g in range(3)]
    pot = [s[g] * sp.Add(*[sp.cos(sp.pi * xi) for xi in x]) for g in range(3)]
    w = {}
    for g, h, wt in EDGES:
        w[g, h] = w[h, g] = sp.Rational(str(wt))
    sources = []
    for g in range(3):
        div = sum(sp.diff(b_ * sp.diff(rho[g], xi) + rho[g] * sp.diff(pot[g], xi), xi) for xi in x)
        reaction = 0
        for h in range(3):
            if (g, h) not in w:
                continue
            if coupling == "laplacian":
                reaction += -w[g, h] * (rho[g] - rho[h])
            else:
                k_gh = w[g, h] * sp.exp((pot[g] - pot[h]) / (2 * b_))
                k_hg = w[g, h] * sp.exp((pot[h] - pot[g]) / (2 * b_))
                reaction += k_hg * rho[h] - k_gh * rho[g]
        sources.append(_to_parser(sp.diff(rho[g], t) - div - reaction))
    name = f"mms-{'affine-' if affine else ''}{coupling}"
    return ExactSolution(name, coupling, beta, dim, [_to_parser(p) for p in pot],
                         [_to_parser(r) for r in rho], sources)


def cosine_mode(dim: int, beta: float = 0.1) -> ExactSolution:
    """docs/model.md: ``V = 0``, laplacian,
    ``ρ_g = 1 + a_g Π cos(k_i π x_i) e^{-(βπ²|k|²+λ)t}``."""
    lam, vecs = np.linalg.eigh(_LAPLACIAN)
    a = 0.5 * vecs[:, 1] / np.max(np.abs(vecs[:, 1]))
    k = [1, 2, 1][:dim]
    rate = beta * math.pi**2 * sum(ki**2 for ki in k) + lam[1]
    mode = "*".join(f"cos({ki}*pi*x[{i}])" for i, ki in enumerate(k))
    exact = [f"1 + ({float(a[g])!r})*{mode}*exp(-({float(rate)!r})*t)" for g in range(3)]
    return ExactSolution("cosine-mode", "laplacian", beta, dim, ["0"] * 3, exact, None)


_SHAPES = {1: "interval", 2: "rectangle", 3: "box"}


def settings_for(sol: ExactSolution, cells: int, degree: int, scheme: str, steps: int,
                 t_end: float, lumping: bool = False) -> Settings:
    """Validated settings that run ``sol`` on a uniform mesh."""
    return settings_from_dict({
        "mesh": {"shape": _SHAPES[sol.dim], "cells": [cells] * sol.dim},
        "space": {"degree": degree, "lumping": lumping},
        "graph": {"kind": "edges", "n": 3, "edges": EDGES},
        "model": {"coupling": sol.coupling, "beta": sol.beta, "potentials": sol.potentials,
                  "initials": sol.initials(),
                  **({"sources": sol.sources} if sol.sources else {})},
        "time": {"scheme": scheme, "dt": t_end / steps, "t_end": t_end},
        "solver": {"type": "direct"},
        "output": {"fields_every": 0},
    }, source=sol.name)


def _vertex_select(values: list, index: fem.Constant):
    """One UFL expression equal to ``values[index]``: one compiled form serves every vertex."""
    value = ufl.as_ufl(values[-1])
    for i in range(len(values) - 2, -1, -1):
        value = ufl.conditional(ufl.lt(index, i + 0.5), values[i], value)
    return value


def errors(sim: Simulation, sol: ExactSolution) -> tuple[float, float]:
    """L² and H¹-seminorm errors at the current time, summed over vertices (collective).

    The exact solution enters the error forms as a UFL expression integrated with a
    quadrature of degree ``2k + 6``: no interpolation into a finer space, whose size (P4 on
    a 32³ mesh: two million dofs) would dominate the cost of the 3-D studies.
    """
    mesh, degree = sim.mesh, sim.settings.space.degree
    x = ufl.SpatialCoordinate(mesh)
    scalar = dolfinx.default_scalar_type
    t, g_index = fem.Constant(mesh, scalar(sim.t)), fem.Constant(mesh, scalar(0))
    exact = _vertex_select([to_ufl(parse(s, variables=("x", "t"), gdim=sol.dim), x, t=t)
                            for s in sol.exact], g_index)
    u = fem.Function(sim.model.V)
    e = u - exact
    dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 2 * degree + 6})
    l2_form = fem.form(e * e * dx)
    h1_form = fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * dx)
    l2 = h1 = 0.0
    for g in range(sim.graph.n):
        sim.vertex_function(g, out=u)
        g_index.value = g
        l2 += fem.assemble_scalar(l2_form)
        h1 += fem.assemble_scalar(h1_form)
    l2, h1 = sim.comm.allreduce(np.array([l2, h1]), op=MPI.SUM)
    return math.sqrt(l2), math.sqrt(h1)


def _solve(settings: Settings, sol: ExactSolution, comm: MPI.Comm) -> tuple[float, float, float]:
    """Run to t_end; return (L², H¹ errors, minimum nodal density over all steps)."""
    (l2, h1), low = _run_to_end(settings, comm, lambda sim: errors(sim, sol))
    return l2, h1, low


def observed_orders(sizes, values) -> list[float]:
    """``log(e_i / e_{i+1}) / log(s_i / s_{i+1})`` for consecutive refinements."""
    return [math.log(values[i] / values[i + 1]) / math.log(sizes[i] / sizes[i + 1])
            for i in range(len(values) - 1)]


@dataclass
class Study:
    """A refinement study: sizes (h or τ), L² and H¹ errors, expected orders.

    ``extra`` holds further error columns (name → values, one per size), printed and written
    with their observed orders.
    """

    name: str
    kind: str  # "space" or "time"
    expected: tuple[float, float]
    sizes: list[float] = field(default_factory=list)
    l2: list[float] = field(default_factory=list)
    h1: list[float] = field(default_factory=list)
    min_density: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def orders(self) -> tuple[list[float], list[float]]:
        return observed_orders(self.sizes, self.l2), observed_orders(self.sizes, self.h1)

    def add(self, size: float, l2: float, h1: float, min_density: float, **extra: float) -> None:
        """Append one refinement level."""
        self.sizes.append(size)
        self.l2.append(l2)
        self.h1.append(h1)
        self.min_density.append(min_density)
        for key, value in extra.items():
            self.extra.setdefault(key, []).append(value)

    def table(self) -> str:
        symbol = "h" if self.kind == "space" else "tau"
        o2, o1 = self.orders
        more = {k: (v, observed_orders(self.sizes, v)) for k, v in self.extra.items()}
        head = "".join(f" {k:>10} | {'order':>5} |" for k in more)
        rule = "".join("-----------:|------:|" for _ in more)
        lines = [f"{self.name} (expected L2 {self.expected[0]:g}, H1 {self.expected[1]:g})",
                 f"| {symbol:>9} | {'L2 error':>10} | {'order':>5} | {'H1 error':>10} | "
                 f"{'order':>5} |{head} {'min rho':>9} |",
                 f"|----------:|-----------:|------:|-----------:|------:|{rule}----------:|"]
        for i, s in enumerate(self.sizes):
            r2 = f"{o2[i - 1]:5.2f}" if i else "    -"
            r1 = f"{o1[i - 1]:5.2f}" if i else "    -"
            cells = "".join(f" {v[i]:10.3e} | {f'{o[i - 1]:5.2f}' if i else '    -'} |"
                            for v, o in more.values())
            lines.append(f"| {s:9.4g} | {self.l2[i]:10.3e} | {r2} | {self.h1[i]:10.3e} | {r1} |"
                         f"{cells} {self.min_density[i]:9.3g} |")
        return "\n".join(lines)

    def text(self) -> str:
        """The table as aligned plain text (for a terminal; :meth:`table` is Markdown)."""
        symbol = "h" if self.kind == "space" else "tau"
        o2, o1 = self.orders
        more = {k: (v, observed_orders(self.sizes, v)) for k, v in self.extra.items()}
        head = "".join(f"  {k:>10}  {'order':>5}" for k in more)
        lines = [f"{self.name} (expected orders: L2 {self.expected[0]:g}, H1 "
                 f"{self.expected[1]:g})",
                 f"  {symbol:>9}  {'L2 error':>10}  {'order':>5}  {'H1 error':>10}  "
                 f"{'order':>5}{head}  {'min rho':>9}"]
        for i, s in enumerate(self.sizes):
            def order(values, i=i):
                return f"{values[i - 1]:5.2f}" if i else "    -"

            cells = "".join(f"  {v[i]:10.3e}  {order(o)}" for v, o in more.values())
            lines.append(f"  {s:9.4g}  {self.l2[i]:10.3e}  {order(o2)}  {self.h1[i]:10.3e}  "
                         f"{order(o1)}{cells}  {self.min_density[i]:9.3g}")
        return "\n".join(lines)

    def verdict(self, tolerance: float) -> tuple[bool, str]:
        """PASS when the observed orders of the two finest levels reach the expected ones.

        An order counts as reached when it is at least ``expected − tolerance`` (a higher
        one is superconvergence, not a failure).

        Returns:
            Whether it passed, and the line that says so.
        """
        o2, o1 = self.orders
        if not o2:
            return False, f"FAIL {self.name}: fewer than two levels, no order"
        checks = [("L2", o2[-1], self.expected[0]), ("H1", o1[-1], self.expected[1])]
        passed = all(math.isfinite(o) and o >= e - tolerance for _, o, e in checks)
        said = ", ".join(f"{norm} order {o:.2f} (expected {e:g}, tolerance {tolerance:g})"
                         for norm, o, e in checks)
        return passed, f"{'PASS' if passed else 'FAIL'} {self.name}: {said}"

    def write_csv(self, path: Path) -> None:
        o2, o1 = self.orders
        more = {k: (v, observed_orders(self.sizes, v)) for k, v in self.extra.items()}
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["h" if self.kind == "space" else "tau", "l2_error", "l2_order",
                          "h1_error", "h1_order", "min_density"]
                         + [c for k in more for c in (k.replace(" ", "_"),
                                                      k.replace(" ", "_") + "_order")])
            for i, s in enumerate(self.sizes):
                out.writerow([s, self.l2[i], o2[i - 1] if i else "", self.h1[i],
                              o1[i - 1] if i else "", self.min_density[i]]
                             + [c for v, o in more.values()
                                for c in (v[i], o[i - 1] if i else "")])


def space_study(sol: ExactSolution, degree: int, cells: list[int], *, t_end: float = 0.1,
                steps0: int = 2, scheme: str = "bdf2", lumping: bool = False,
                tau_exponent: float | None = None, comm: MPI.Comm = MPI.COMM_WORLD) -> Study:
    """Refine h with ``τ ∝ h^e``: ``steps0`` steps on the coarsest mesh.

    The default ``e = (k+1)/2`` makes a second-order scheme's time error shrink like
    ``h^{k+1}``. ``tau_exponent = 0`` keeps ``τ`` fixed: for solutions affine in time
    (:func:`manufactured` with ``affine``), where every scheme is exact in time.
    """
    exponent = (degree + 1) / 2 if tau_exponent is None else tau_exponent
    study = Study(f"space {sol.name} {sol.dim}D P{degree} {scheme}"
                  f"{' lumped' if lumping else ''}", "space", (degree + 1, degree))
    for n in cells:
        ratio = n / cells[0]
        steps = max(1, math.ceil(steps0 * ratio ** exponent - 1e-9))
        l2, h1, low = _solve(settings_for(sol, n, degree, scheme, steps, t_end, lumping), sol, comm)
        study.add(1.0 / n, l2, h1, low)
    return study


_ORDER = {scheme.value: c.order for scheme, c in SCHEME_COEFFICIENTS.items()}


def time_study(sol: ExactSolution, scheme: str, steps: list[int], *, cells: int = 256,
               degree: int = 3, t_end: float = 0.5, comm: MPI.Comm = MPI.COMM_WORLD) -> Study:
    """Refine τ on a mesh fine enough (P3 by default) that the space error stays below."""
    p = _ORDER[scheme]
    study = Study(f"time {sol.name} {sol.dim}D {scheme}", "time", (p, p))
    for n in steps:
        l2, h1, low = _solve(settings_for(sol, cells, degree, scheme, n, t_end), sol, comm)
        study.add(t_end / n, l2, h1, low)
    return study


def mass_study(scheme: str, steps: list[int], t_end: float = 1.0,
               comm: MPI.Comm = MPI.COMM_WORLD) -> Study:
    """laplacian vertex masses against ``exp(-t L) m0`` (unequal V_g); error in the l² norm."""
    sol = ExactSolution("masses", "laplacian", 0.5, 1, ["x[0]", "-2*x[0]**2", "sin(3*x[0])"],
                        ["1 + x[0]", "2 - x[0]", "0.5"], None)
    p = _ORDER[scheme]
    study = Study(f"vertex masses laplacian {scheme}", "time", (p, p))
    lam, q = np.linalg.eigh(_LAPLACIAN)
    for n in steps:
        sim = Simulation(settings_for(sol, 8, 1, scheme, n, t_end), comm)
        m0 = sim.diagnostics().vertex_masses
        while sim.step_index < sim.num_steps:
            sim.advance()
        d = sim.diagnostics()
        sim.destroy()
        exact = q @ (np.exp(-t_end * lam) * (q.T @ m0))
        err = float(np.linalg.norm(d.vertex_masses - exact))
        study.add(t_end / n, err, err, d.min_density)
    return study


# Dof coordinates are matched after rounding to this size (unit-cube domains): far above the
# last-bit differences between partitions, far below any mesh size.
_MATCH = 1e-9


def _snapshot(sim: Simulation) -> tuple[dict, np.ndarray]:
    """All nodal values of ``sim`` on every rank, keyed by rounded dof coordinates.

    Small meshes only (time studies): it lets a later run on the same mesh, possibly
    partitioned differently, be compared dof by dof with this one.
    """
    owned = sim.model.num_owned
    coords = sim.model.V.tabulate_dof_coordinates()[:owned]
    values = np.array(sim.nodal_values())
    x = np.concatenate(sim.comm.allgather(coords))
    rho = np.concatenate(sim.comm.allgather(values), axis=1)
    keys = np.rint(x / _MATCH).astype(np.int64)
    return {tuple(k): i for i, k in enumerate(keys)}, rho


def _local_index(sim: Simulation, snapshot: tuple[dict, np.ndarray]) -> np.ndarray:
    """For each local dof of ``sim`` (owned and ghost), its column in ``snapshot`` (collective).

    Raises:
        RuntimeError: The snapshot was taken on another mesh (on every rank).
    """
    index_of, _ = snapshot
    keys = np.rint(sim.model.V.tabulate_dof_coordinates() / _MATCH).astype(np.int64)
    index = np.array([index_of.get(tuple(k), -1) for k in keys], dtype=np.int64)
    if not sim.comm.allreduce(bool((index >= 0).all()), op=MPI.LAND):
        raise RuntimeError("the snapshot's dofs are not this mesh's dofs")
    return index


def _distance(sim: Simulation, reference: tuple[dict, np.ndarray]) -> tuple[float, float]:
    """L² and H¹-seminorm distances of ``sim``'s state to a snapshot on the same mesh."""
    index, rho = _local_index(sim, reference), reference[1]
    e = fem.Function(sim.model.V)
    dx = ufl.Measure("dx", domain=sim.mesh)
    l2_form = fem.form(e * e * dx)
    h1_form = fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * dx)
    l2 = h1 = 0.0
    u = fem.Function(sim.model.V)  # one work Function for every vertex
    for g in range(sim.graph.n):
        sim.vertex_function(g, out=u)
        e.x.array[:] = u.x.array - rho[g, index]
        l2 += fem.assemble_scalar(l2_form)
        h1 += fem.assemble_scalar(h1_form)
    l2, h1 = sim.comm.allreduce(np.array([l2, h1]), op=MPI.SUM)
    return math.sqrt(l2), math.sqrt(h1)


def _set_state(sim: Simulation, snapshot: tuple[dict, np.ndarray]) -> None:
    """Replace the state of ``sim`` by a snapshot taken on the same mesh (collective)."""
    index, rho = _local_index(sim, snapshot), snapshot[1]
    sim.nodal_values()[:] = rho[:, index[: sim.model.num_owned]]


def _run_to_end(settings: Settings, comm: MPI.Comm, keep, start=None):
    """Run to t_end (from the snapshot ``start`` if given); return ``keep(sim)``, min density."""
    sim = Simulation(settings, comm)
    try:
        if start is not None:
            _set_state(sim, start)
        low = float(np.min(sim.nodal_values(), initial=np.inf))
        while sim.step_index < sim.num_steps:
            sim.advance()
            low = min(low, float(np.min(sim.nodal_values(), initial=np.inf)))
        return keep(sim), comm.allreduce(low, op=MPI.MIN)
    finally:
        sim.destroy()


def _shifted(sol: ExactSolution, t0: float) -> ExactSolution:
    """The same solution with its time origin at ``-t0``: ``ρ(x, t - t0)``, ``f(x, t - t0)``."""
    def shift(texts):
        return None if texts is None else [re.sub(r"\bt\b", f"(t - {t0!r})", s) for s in texts]

    return dataclasses.replace(sol, exact=shift(sol.exact), sources=shift(sol.sources))


def semidiscrete_time_studies(sol: ExactSolution, degree: int, cells: int, steps: list[int], *,
                              schemes: tuple[str, ...] = ("implicit-euler", "crank-nicolson",
                                                          "bdf2"),
                              t_end: float = 0.5, reference_factor: int = 16,
                              prepare: float = 0.1, comm: MPI.Comm = MPI.COMM_WORLD
                              ) -> list[Study]:
    """Refine τ on a fixed mesh against a reference run on the same mesh.

    The reference is BDF2 with ``τ_min / reference_factor``, so the error measured is that of
    the time discretization of the semi-discrete (space-discrete) system alone: the space
    error, the same in every run on the mesh, cancels. The reference's own error is
    ``reference_factor²`` (default 256) times below BDF2's at ``τ_min`` and about 64 times below
    Crank–Nicolson's (whose error constant is some 4 times smaller): it bends the last observed
    order of Crank–Nicolson by ~0.02, of the others by less.

    Every run starts from a well-prepared state: the interpolated initial data have an
    ``O(h^{k+1})`` component along the stiff modes (``λ ~ β/h²``) of the semi-discrete
    system, which Crank–Nicolson (A- but not L-stable) carries undamped to ``t_end`` while the
    reference damps it: that would be measured as a time error independent of ``τ``. So the
    problem is first run from ``t = -prepare`` to 0 with BDF2 and small steps (all modes with
    ``λ prepare ≫ 1`` decay), and that state is the initial state of the reference and of
    every run. Implicit Euler and BDF2 give the same orders without it.
    """
    reference_steps = steps[-1] * reference_factor
    prepare_steps = max(1, round(prepare / (t_end / reference_steps)))
    start, _ = _run_to_end(settings_for(_shifted(sol, prepare), cells, degree, "bdf2",
                                        prepare_steps, prepare), comm, _snapshot)
    reference, _ = _run_to_end(settings_for(sol, cells, degree, "bdf2", reference_steps, t_end),
                               comm, _snapshot, start)
    studies = []
    for scheme in schemes:
        p = _ORDER[scheme]
        study = Study(f"time {sol.name} {sol.dim}D P{degree} {cells} cells {scheme} "
                      f"(vs BDF2, {reference_steps} steps)", "time", (p, p))
        for n in steps:
            (l2, h1), low = _run_to_end(settings_for(sol, cells, degree, scheme, n, t_end), comm,
                                        lambda sim: _distance(sim, reference), start)
            study.add(t_end / n, l2, h1, low)
        studies.append(study)
    return studies


def gibbs_state(dim: int, beta: float = 0.5) -> tuple[ExactSolution, np.ndarray]:
    """gibbs with ``V_g = s_g Σ cos(π x_i)`` on the unit cube and its exact stationary state.

    ``ρ_g^∞ = m π_g / Σ_h ∫π_h`` with ``π_g = exp(−V_g/β)`` and ``∫_{(0,1)^d} π_g =
    I_0(s_g/β)^d`` (``I_0`` the modified Bessel function: ``(1/π)∫_0^π e^{z cos θ} dθ``).
    The initial densities are constants, interpolated exactly, so the discrete total mass
    ``m`` is exact too.

    Returns:
        The solution (``exact`` is the stationary state) and the exact vertex fractions
        ``∫π_g / Σ_h ∫π_h``.
    """
    s, initial = [0.5, -0.25, 1.0], [1.0, 0.5, 1.5]
    integrals = np.i0(np.array(s) / beta) ** dim
    fractions = integrals / integrals.sum()
    modes = " + ".join(f"cos(pi*x[{i}])" for i in range(dim))
    scale = sum(initial) / float(integrals.sum())
    sol = ExactSolution("gibbs-state", "gibbs", beta, dim, [f"{v!r}*({modes})" for v in s],
                        [f"{scale!r}*exp(-({v / beta!r})*({modes}))" for v in s], None,
                        initial=[repr(c) for c in initial])
    return sol, fractions


def gibbs_state_study(dim: int, degree: int, cells: list[int], *, t_end: float = 100.0,
                      steps: int = 20, comm: MPI.Comm = MPI.COMM_WORLD) -> Study:
    """gibbs with spatially varying ``V_g``: the long-time state against the exact Gibbs state.

    In the rho-form the discrete Gibbs state is not ``I_h π`` but the kernel of the
    discrete operator: it approaches the exact state as ``h → 0`` at the rate of the space
    discretization. Implicit Euler with ``τ = 5`` damps every mode by at least
    ``1/(1 + 5 γ)`` per step (``γ`` the spectral gap, of order 1 here): after 20 steps the
    run is on the discrete stationary state up to ~1e-12 (40 steps change the L² distances
    by a relative 2e-10 in 1-D, less in 2-D/3-D). Columns: distances to the exact
    state and ``max_g |m_g(T)/m − ∫π_g/Σ∫π_h|``, the error of the vertex fractions.
    """
    sol, fractions = gibbs_state(dim)
    study = Study(f"gibbs state {dim}D P{degree} (V_g = s_g sum cos(pi x_i), beta = 0.5)",
                  "space", (degree + 1, degree))
    for n in cells:
        def keep(sim):
            masses = sim.diagnostics().vertex_masses
            return errors(sim, sol), float(np.max(np.abs(masses / masses.sum() - fractions)))

        ((l2, h1), fraction_error), low = _run_to_end(
            settings_for(sol, n, degree, "implicit-euler", steps, t_end), comm, keep)
        study.add(1.0 / n, l2, h1, low, **{"fractions": fraction_error})
    return study


def gibbs_study(t_end: float = 4.0, steps: int = 400, cells: int = 32,
                comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """gibbs with constant unequal ``V_g``: convergence to the Gibbs state, monotone H, rate.

    With ``V_g = c_g`` the Gibbs state is constant per vertex and the spectral gap is
    ``min(β π², γ)``, ``γ`` the gap of the vertex jump generator with rates
    ``w_gh exp((c_g − c_h)/2β)``; ``H`` decays like ``exp(-2 gap t)``.
    """
    beta, c = 0.5, [0.0, 0.3, -0.2]
    sol = ExactSolution("gibbs", "gibbs", beta, 1, [str(v) for v in c],
                        ["1 + 0.5*cos(pi*x[0])", "0.5 + 0.2*cos(2*pi*x[0])", "0.2"], None)
    generator = np.zeros((3, 3))
    for g, h, w in EDGES:
        generator[g, h] = w * math.exp((c[g] - c[h]) / (2 * beta))  # rate g -> h
        generator[h, g] = w * math.exp((c[h] - c[g]) / (2 * beta))
    generator -= np.diag(generator.sum(axis=1))
    graph_gap = float(np.sort(-np.linalg.eigvals(generator).real)[1])
    gap = min(beta * math.pi**2, graph_gap)
    sim = Simulation(settings_for(sol, cells, 2, "bdf2", steps, t_end), comm)
    history = sim.run()
    fractions = sim.model.gibbs_fractions
    sim.destroy()
    t = np.array([d.t for d in history])
    h = np.array([d.rel_entropy for d in history])
    window = (h > 1e-9) & (h < 1e-3)
    slope = np.polyfit(t[window], np.log(h[window]), 1)[0] if window.sum() > 2 else math.nan
    masses = history[-1].vertex_masses
    return {
        "monotone": bool(np.all(np.diff(h) <= 1e-12 * max(1.0, h[0]))),
        "rel_entropy_first": float(h[0]), "rel_entropy_last": float(h[-1]),
        "measured_rate": float(-slope / 2), "spectral_gap": gap, "graph_gap": graph_gap,
        "mass_error": float(np.max(np.abs(masses - masses.sum() * fractions))),
        "history": (t, h),
    }


def positivity_study(dim: int = 1, cells: int = 100, floor: float = 1e-8,
                     comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """Small β, strong drift, P1, τ ≪ h²/β: consistent mass undershoots, lumped does not.

    1-D: gibbs, β = 0.01, a steep front, ``V_g = x, −x, 2x``. 2-D: laplacian, β = 0.02, a
    narrow Gaussian bump on a background ``floor``, ``V_g = x + y/2, −x, x/2 − y`` (mesh
    Péclet number ≤ 0.87 on 64²). On the right-triangle meshes of ``create_rectangle`` the
    hypotenuses carry no diffusive coupling, so any drift puts positive off-diagonal entries
    there and ``M_L + τK`` is not an M-matrix: lumping reduces the undershoot by orders of
    magnitude but guarantees nothing; a background above the remaining undershoot stays
    positive.

    Returns:
        ``{lumping: (min density over all steps, relative total-mass drift)}``.
    """
    if dim == 1:
        sol = ExactSolution("positivity", "gibbs", 0.01, 1, ["x[0]", "-x[0]", "2*x[0]"],
                            [f"{floor!r} + (1 + tanh((x[0] - 0.5)/0.002))/2"] * 3, None)
    else:
        sol = ExactSolution("positivity", "laplacian", 0.02, 2,
                            ["x[0] + 0.5*x[1]", "-x[0]", "0.5*x[0] - x[1]"],
                            [f"{floor!r} + exp(-((x[0] - 0.5)**2 + (x[1] - 0.5)**2)/0.0004)"] * 3,
                            None)
    out = {}
    for lumping in (False, True):
        sim = Simulation(settings_for(sol, cells, 1, "implicit-euler", 20, 0.002, lumping), comm)
        history = sim.run()
        sim.destroy()
        out[lumping] = (min(d.min_density for d in history),
                        abs(history[-1].mass - history[0].mass) / history[0].mass)
    return out


# -- the driver: tables, CSV, plots, docs ---------------------------------------------------------
def _plot(studies: list[Study], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, which in zip(axes, ("l2", "h1"), strict=True):
        for s in studies:
            values = getattr(s, which)
            ax.loglog(s.sizes, values, "o-", label=s.name)
            p = s.expected[0 if which == "l2" else 1]
            ref = values[-1] * (np.array(s.sizes) / s.sizes[-1]) ** p
            ax.loglog(s.sizes, ref, "k:", lw=0.8)
        ax.set_xlabel("h" if studies[0].kind == "space" else "tau")
        ax.set_title(f"{title}: {'L2' if which == 'l2' else 'H1'} error (dotted: slopes)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


FAMILIES = ("space", "space-affine", "time-1d", "time-semidiscrete", "gibbs-state", "jko",
            "long-time")


#: How far below the expected order the observed one (of the two finest levels) may fall.
TOLERANCE = 0.25
#: The same for ``--quick``, whose coarse levels are not all asymptotic yet (3-D P1 cosine
#: mode from 4 to 8 cells: 1.61 for 2).
QUICK_TOLERANCE = 0.5


@dataclass
class Verification:
    """What :func:`run_all` found: the Markdown report and one verdict per study."""

    report: str
    verdicts: list[tuple[bool, str]]

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.verdicts)

    def summary(self) -> str:
        """The PASS/FAIL lines and the overall count, as printed at the end."""
        failed = sum(not ok for ok, _ in self.verdicts)
        lines = [line for _, line in self.verdicts]
        lines.append(f"{len(self.verdicts) - failed} of {len(self.verdicts)} studies PASS"
                     + (f", {failed} FAIL" if failed else ""))
        return "\n".join(lines)


def run_all(out: Path, quick: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
            only: tuple[str, ...] | None = None, quiet: bool = False) -> Verification:
    """Run every study (or the families in ``only``); write CSVs and PNGs into ``out``.

    Prints plain-text tables as the studies finish (rank 0; not with ``quiet``).

    Returns:
        The Markdown report (for ``docs/verification.md``) and the verdicts.
    """
    def want(family: str) -> bool:
        return only is None or family in only

    root = comm.rank == 0
    if root:
        out.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    report: list[str] = []
    verdicts: list[tuple[bool, str]] = []
    tolerance = QUICK_TOLERANCE if quick else TOLERANCE

    def emit(markdown: str, text: str | None = None) -> None:
        """Markdown for the report; plain ``text`` (default: the same) for the terminal."""
        report.append(markdown)
        if root and not quiet:
            print(markdown if text is None else text, flush=True)

    groups: dict[str, list[Study]] = {}
    schemes = tuple(_ORDER)
    # Space: BDF2 with τ ∝ h^((k+1)/2) against the time-periodic MMS and the cosine mode.
    cells = {(1, 1): [4, 8, 16, 32, 64, 128], (1, 2): [4, 8, 16, 32, 64, 128],
             (2, 1): [4, 8, 16, 32, 64], (2, 2): [4, 8, 16, 32, 64],
             (3, 1): [2, 4, 8, 16, 32], (3, 2): [1, 2, 4, 8, 16]}
    # Space, every scheme, the affine-in-time MMS (exact in time): fixed τ = 0.125.
    affine_cells = {(1, 1): [4, 8, 16, 32, 64], (1, 2): [4, 8, 16, 32, 64],
                    (2, 1): [4, 8, 16, 32, 64], (2, 2): [4, 8, 16, 32, 64],
                    (3, 1): [2, 4, 8, 16, 32], (3, 2): [1, 2, 4, 8, 16]}
    gibbs_cells = {(1, 1): [8, 16, 32, 64, 128], (1, 2): [8, 16, 32, 64, 128],
                   (2, 1): [4, 8, 16, 32, 64], (2, 2): [4, 8, 16, 32, 64],
                   (3, 1): [2, 4, 8, 16, 32], (3, 2): [2, 4, 8, 16]}
    if quick:
        for table in (cells, affine_cells, gibbs_cells):
            for key in table:
                # 3-D from 4 cells: 2 -> 4 is too coarse for any order to show.
                table[key] = [4, 8, 16] if key[0] < 3 else [4, 8]
    for dim in (1, 2, 3) if want("space") else ():
        for degree in (1, 2):
            for sol in (manufactured("laplacian", dim), manufactured("gibbs", dim),
                        cosine_mode(dim)):
                groups.setdefault(f"space-{dim}d", []).append(
                    space_study(sol, degree, cells[dim, degree], comm=comm))
    for dim in (1, 2, 3) if want("space-affine") else ():
        for degree in (1, 2):
            for coupling in ("laplacian", "gibbs"):
                sol = manufactured(coupling, dim, affine=True)
                for scheme in schemes:
                    groups.setdefault(f"space-affine-{dim}d", []).append(space_study(
                        sol, degree, affine_cells[dim, degree], t_end=0.5, steps0=4,
                        scheme=scheme, tau_exponent=0, comm=comm))
    steps = [4, 8, 16] if quick else [4, 8, 16, 32, 64, 128]
    for scheme in schemes if want("time-1d") else ():
        for sol in (manufactured("laplacian", 1), manufactured("gibbs", 1), cosine_mode(1)):
            groups.setdefault("time-1d", []).append(
                time_study(sol, scheme, steps, cells=64 if quick else 256, comm=comm))
        groups.setdefault("masses", []).append(mass_study(scheme, steps, comm=comm))
    # Time, semi-discrete: the time error alone, against a BDF2 reference on the same mesh.
    semidiscrete = ((1, 8 if quick else 32), (2, 8 if quick else 16), (3, 2 if quick else 4))
    for dim, mesh_cells in semidiscrete if want("time-semidiscrete") else ():
        for degree in (1, 2):
            for coupling in ("laplacian", "gibbs"):
                groups.setdefault(f"time-semidiscrete-{dim}d", []).extend(
                    semidiscrete_time_studies(manufactured(coupling, dim), degree, mesh_cells,
                                              steps[:-1] if not quick else steps, comm=comm))
    for dim in (1, 2, 3) if want("gibbs-state") else ():
        for degree in (1, 2):
            groups.setdefault("gibbs-state", []).append(
                gibbs_state_study(dim, degree, gibbs_cells[dim, degree], comm=comm))
    for name, studies in groups.items():
        emit(f"\n### {name}\n\n![{name}](verification/{name}.png)\n",
             f"\n== {name} (figure: {out / f'{name}.png'}) ==")
        for i, s in enumerate(studies):
            verdicts.append(s.verdict(tolerance))
            emit("```\n" + s.table() + "\n```", s.text() + "\n" + verdicts[-1][1] + "\n")
            if root:
                s.write_csv(out / f"{name}-{i}.csv")
        if root:
            _plot(studies, out / f"{name}.png", name)
    if want("jko"):
        jko = jko_vs_implicit_euler([5, 10, 20] if quick else [5, 10, 20, 40, 80], comm=comm)
        emit("\n### jko: the minimizing-movement step against implicit Euler\n\n"
             "![jko](verification/jko-vs-ie.png)\n\n"
             "1-D, two vertices, gibbs, P1 with lumped mass for both, `h ~ tau`, `t_end = 0.2`;"
             " the lumped L2 distance of the two solutions at `t_end`, expected order 1.\n",
             f"\n== jko: the minimizing-movement step against implicit Euler (figure: "
             f"{out / 'jko-vs-ie.png'}) ==\n1-D, two vertices, gibbs, P1 with lumped mass, "
             f"h ~ tau, t_end = 0.2: the lumped L2 distance of the two solutions at t_end")
        order = float(jko.orders[-1])
        ok = math.isfinite(order) and order >= 1 - tolerance
        verdicts.append((ok, f"{'PASS' if ok else 'FAIL'} jko vs implicit Euler: order "
                             f"{order:.2f} (expected 1, tolerance {tolerance:g})"))
        emit(jko.table(), jko.table().replace("|", " ") + "\n" + verdicts[-1][1])
        if root:
            jko.write_csv(out / "jko-vs-ie.csv")
            jko.plot(out / "jko-vs-ie.png")
    if not want("long-time"):
        return Verification("\n".join(report), verdicts)
    g = gibbs_study(comm=comm)
    emit("\n### gibbs: long-time behaviour (1D P2, BDF2, V_g = 0, 0.3, -0.2, beta = 0.5)\n",
         "\n== gibbs: long-time behaviour (1D P2, BDF2, V_g = 0, 0.3, -0.2, beta = 0.5) ==")
    emit(f"relative entropy {g['rel_entropy_first']:.4g} -> {g['rel_entropy_last']:.4g}, "
         f"monotone: {g['monotone']}; decay rate of H/2 measured {g['measured_rate']:.5g}, "
         f"spectral gap min(beta pi^2, graph gap) = {g['spectral_gap']:.5g}; "
         f"max |m_g(T) - m_tot pi_g share| = {g['mass_error']:.3g}")
    ok = bool(g["monotone"])
    verdicts.append((ok, f"{'PASS' if ok else 'FAIL'} gibbs long-time: H(rho | rho_pi) "
                         f"{'decreases' if ok else 'does not decrease'} monotonically"))
    for dim, mesh_cells, floor in ((1, 100, 1e-8), (2, 64, 1e-3), (2, 64, 0.0)):
        p = positivity_study(dim=dim, cells=mesh_cells, floor=floor, comm=comm)
        setup = ("gibbs, beta = 0.01, V_g = x, -x, 2x, a tanh front" if dim == 1 else
                 "laplacian, beta = 0.02, V_g = x + y/2, -x, x/2 - y, a Gaussian bump")
        heading = (f"positivity ({dim}D P1, {mesh_cells} cells per side, {setup} on a "
                   f"background {floor:g}, implicit Euler tau = 1e-4)")
        emit(f"\n### {heading}\n", f"\n== {heading} ==")
        emit(f"consistent mass: min density {p[False][0]:.3e}, relative mass drift "
             f"{p[False][1]:.1e}\nlumped mass:     min density {p[True][0]:.3e}, relative mass "
             f"drift {p[True][1]:.1e}")
    return Verification("\n".join(report), verdicts)


DOC_HEAD = """# Verification

Regenerate with `python scripts/convergence.py --docs` (or `rdgraph convergence --docs`;
add `mpiexec -n 2` in front for 2 ranks: the numbers agree to solver tolerance). A full run
takes 12 minutes on 2 ranks of an idle 2-core machine (16 with other jobs running; half of
it the `space` family: 3-D P1 on 32^3 and P2 on 16^3); `--quick` takes about 75 s on one
idle core (72 s of CPU measured);
`--only FAMILY[,FAMILY]`
runs some families (`space`, `space-affine`, `time-1d`, `time-semidiscrete`, `gibbs-state`,
`jko`, `long-time`) into `--out`.

Common to all studies: the graph is a triangle with weights 1, 2, 0.5; errors are summed over
its 3 vertices, measured against the exact solution as a UFL expression with quadrature of
degree 2k+6, reduced over ranks; H1 means the H1 seminorm; `min rho` is the smallest nodal
density over all steps. Expected: Pk L2 order k+1, H1 order k; implicit Euler 1,
Crank-Nicolson 2, BDF2 2 (its first step is implicit Euler).

* Exact solutions: manufactured `rho_g = a_g + b_g cos(t + phi_g) prod cos(pi x_i)` with
  `V_g = s_g sum cos(pi x_i)` (sources by sympy, both couplings), the same with the affine
  time profile `rho_g = a_g + (b_g + c_g t) prod cos(pi x_i)` ("mms-affine"), and the
  cosine mode of the model page (`V = 0`, laplacian, second Laplacian eigenvector).
* `space-Nd`: BDF2 with `tau ~ h^((k+1)/2)` (so its O(tau^2) error shrinks like h^(k+1)),
  `t_end = 0.1`. h is halved 5 times in 1-D, 4 times in 2-D and 3-D (3-D P1: 2 to 32 cells
  per side; 3-D P2: 1 to 16, as 33^3 P2 dofs per vertex is the most that 2 cores solve in
  reasonable time, so its coarsest level is a single cube, pre-asymptotic; read the order
  from the finer levels).
* `space-affine-Nd`: every scheme (implicit Euler, Crank-Nicolson, BDF2) at a fixed
  `tau = 0.125`, `t_end = 0.5`, against the affine-in-time solution. Its source is affine in t,
  and each scheme reproduces functions affine in time exactly (difference quotients of an
  affine function are exact, and the sources enter at t_{n+1}, at the midpoint average or at
  t_{n+1} as the schemes require), so the time error vanishes and the observed orders are
  spatial, for every scheme, without a tau tied to h. What remains besides the space error
  is the decay of the O(h^(k+1)) initial-interpolation transient, itself of space-error size.
  h halved 4 times in every dimension (3-D P1 2..32, 3-D P2 1..16 cells per side).
* `time-1d`: P3 on 256 cells, `t_end = 0.5`, the error against the exact solution (the
  space error is far below the time error).
* `time-semidiscrete-Nd`: 1-D (32 cells), 2-D (16 x 16) and 3-D (4^3), P1 and P2, both
  couplings, each scheme; tau halved 4 times (4 to 64 steps to `t_end = 0.5`). The error is
  measured against a **reference run on the same mesh** (BDF2 with 16 times the finest
  number of steps), i.e. it is the error of the time discretization of the semi-discrete
  system; the space error cancels. All runs start from a well-prepared state: the
  interpolated initial data carry an O(h^(k+1)) part along the stiff modes (rates ~
  beta/h^2) that Crank-Nicolson, A- but not L-stable, carries undamped to `t_end` while the
  reference damps it; that part would read as a tau-independent time error (erratic observed
  CN orders, 0.6 to 8.9, on 2-D P1 without it). So the problem is first run from t = -0.1 to
  0 with fine BDF2 steps, and that state starts every run. Implicit Euler and BDF2 show
  their orders either way.
* `masses`: laplacian with unequal `V_g`, error `|m(1) - exp(-L) m0|` (the l2 norm,
  shown in both columns).
* `gibbs-state`: gibbs with spatially varying `V_g = s_g sum cos(pi x_i)`, beta = 0.5. The
  exact Gibbs state `rho_g = m exp(-V_g/beta) / sum_h int exp(-V_h/beta)` (the integrals are
  Bessel I0(s_g/beta)^d) is stationary for the PDE, but the discrete rho-form operator's
  kernel is not its interpolant: the long-time discrete state (implicit Euler, tau = 5, 20
  steps: 40 steps change it by ~1e-12) approaches it at the space order. The `fractions` column is
  `max_g |m_g(T)/m - int pi_g / sum int pi_h|`, the error of the vertex fractions: observed
  order 2k.
* Mass lumping (`[space] lumping = true`): row-sum diagonals for the mass and the gibbs
  rate matrices. It keeps P1 densities non-negative for small steps where the consistent
  mass undershoots (`positivity` below, 1-D and 2-D); total mass is conserved exactly either
  way; it costs an O(h^2) consistency error, so keep it off for P2 and for accuracy studies.
  Lumping is no guarantee: `M_L + tau K` is an M-matrix only while the mesh Peclet number
  `|grad V| h / beta` stays below about 2 and the mesh has no edges without diffusive
  coupling. The right-triangle meshes of `create_rectangle` have such edges (the
  hypotenuses), where any drift gives positive off-diagonal entries: in the 2-D case
  (Peclet 0.87) lumping cuts the undershoot below a bump on a zero background by a factor
  of about 30 but does not remove it, and keeps the density positive on a background of
  1e-3, where the consistent mass goes negative.
"""
