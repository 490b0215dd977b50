"""Run settings: the TOML schema, validation and ``--set`` overrides.

Everything here is plain Python and runs identically on every MPI rank, before any
collective operation, so that a bad config fails the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdgraph.errors import InputError
from rdgraph.problem.defaults import default_config

__all__ = [
    "COUPLINGS",
    "GRAPH_KINDS",
    "MESH_SHAPES",
    "SCHEMES",
    "SOLVER_TYPES",
    "Scheme",
    "GraphSettings",
    "MeshSettings",
    "ModelSettings",
    "OutputSettings",
    "Settings",
    "SolverSettings",
    "SpaceSettings",
    "TimeSettings",
    "apply_overrides",
    "load_settings",
    "parse_override",
    "read_config",
    "resolve_paths",
    "settings_from_dict",
]

MESH_SHAPES = ("interval", "rectangle", "box", "file")
GRAPH_KINDS = ("path", "cycle", "complete", "star", "hypercube", "grid", "random", "edges", "file",
               "hamming", "product")
COUPLINGS = ("laplacian", "gibbs", "upwind")
GIBBS_RATES = ("weighted-mass", "nodal")
SCHEMES = ("implicit-euler", "crank-nicolson", "bdf2", "jko", "accelerated")


# ``time.t_end`` of a run that stops at equilibrium.
EQUILIBRIUM = "equilibrium"


class Scheme(enum.StrEnum):
    """``[time] scheme``: what the time steppers and the checks ask of a scheme by name.

    The settings keep the plain string (``TimeSettings.scheme``, as in the config file);
    :attr:`TimeSettings.method` gives this enum, so that no other module compares names.
    """

    IMPLICIT_EULER = "implicit-euler"
    CRANK_NICOLSON = "crank-nicolson"
    BDF2 = "bdf2"
    JKO = "jko"
    ACCELERATED = "accelerated"

    @property
    def linear(self) -> bool:
        """One linear block solve per step (implicit Euler, Crank–Nicolson, BDF2)."""
        return self in (Scheme.IMPLICIT_EULER, Scheme.CRANK_NICOLSON, Scheme.BDF2)

    @property
    def multistep(self) -> bool:
        """The step needs ρ^{n-1} besides ρ^n (BDF2)."""
        return self is Scheme.BDF2

    @property
    def nonlinear_unknowns(self) -> bool:
        """Newton on nodal potentials or log densities: P1 only, no source term."""
        return self in (Scheme.JKO, Scheme.ACCELERATED)


assert tuple(Scheme) == SCHEMES
SOLVER_TYPES = ("direct", "krylov", "fieldsplit", "spectral", "vertex", "auto")
INNER_SOLVERS = ("auto", "lu", "amg")
SCALAR_LAYOUTS = ("auto", "per-rank", "distributed")
GIBBS_COUPLINGS = ("auto", "per-edge", "quadrature")
FACTORIZATION_PRECISIONS = ("auto", "double", "single")


@dataclass
class MeshSettings:
    """``[mesh]``: the one mesh every graph vertex shares."""

    shape: str = "rectangle"
    """``interval``, ``rectangle`` or ``box`` (a built-in mesh of the box from ``lower`` to
    ``upper`` in 1-D, 2-D or 3-D), or ``file`` (a gmsh mesh read from ``file``)."""
    cells: list[int] = field(default_factory=lambda: [32, 32])
    """Cells per direction of a built-in mesh, one integer per dimension."""
    lower: list[float] | None = None
    """Lower corner of a built-in mesh, one number per dimension; unset: 0 in each."""
    upper: list[float] | None = None
    """Upper corner of a built-in mesh, one number per dimension; unset: 1 in each."""
    file: str | None = None
    """Gmsh ``.msh`` file for ``shape = "file"``, relative to the config file's folder; its
    cells must carry a physical group of the top dimension."""


@dataclass
class SpaceSettings:
    """``[space]``: the finite-element space, the same for every vertex."""

    degree: int = 1
    """Lagrange degree, 1 to 3."""
    quadrature_degree: int | None = None
    """Quadrature degree of the forms; unset: ``2*degree + 2``, enough for the polynomial
    parts of every form."""
    lumping: bool = False
    """Row-sum (lumped) mass for the time derivative and the reaction terms: keeps P1
    densities non-negative for small steps, at the price of an O(h²) consistency error."""


@dataclass
class GraphSettings:
    """``[graph]``: the weighted graph whose vertices carry one density each."""

    kind: str = "path"
    """``path``, ``cycle``, ``complete``, ``star``, ``hypercube``, ``grid``, ``random``,
    ``edges`` (the list ``edges``) or ``file`` (an edge file)."""
    n: int | None = None
    """Number of vertices: needed by ``path``, ``cycle``, ``complete``, ``star`` and
    ``random``; optional for ``edges`` and ``file`` (unset: the largest index + 1)."""
    dim: int | None = None
    """``hypercube``: its dimension, 1 to 16 (``2**dim`` vertices)."""
    shape: list[int] | None = None
    """``grid``: ``[rows, cols]``."""
    weight: float = 1.0
    """Edge weight of the generated graphs (> 0)."""
    p: float = 0.5
    """``random``: edge probability of the Erdős–Rényi graph G(n, p); its weights are
    ``weight`` times a uniform draw from [0.5, 1.5], and it is made connected."""
    edges: list[list[float]] | None = None
    """``edges``: a list of ``[g, h, w]`` triples (or ``[g, h]``, weight 1)."""
    file: str | None = None
    """``file``: a text file of ``g,h,w`` lines (``#`` starts a comment), relative to the
    config file's folder."""
    seed: int = 0
    """``random``: the seed of the draw (the same graph on every rank)."""
    choices: int | None = None
    """Hamming graph (``kind = "hamming"``): letters per position, so ``n = choices**dim``;
    vertex ``g`` is the word ``a_0-a_1-...`` with ``g = Σ a_i choices^(dim-1-i)`` (the order of
    ``numpy.ravel_multi_index``), joined to the words differing in one letter. NAS-Bench-201's
    cell space is ``dim = 6``, ``choices = 5``."""
    factors: list[dict] | None = None
    """Product graph (``kind = "product"``): the factors of the Cartesian product, first most
    significant, each a table of graph keys, e.g. ``[{kind = "complete", n = 5},
    {kind = "path", n = 3}]``. Its spectrum comes from the factors'."""
    labels: list[str] | str | None = None
    """Vertex names (architecture names), shown in the outputs: a list of N strings, or a CSV
    file with a header and a ``label`` column (optionally a ``vertex`` column of indices).
    Hamming and product graphs are labelled by their words by default."""


@dataclass
class ModelSettings:
    """``[model]``: the coupling, the temperature and the expressions of the problem."""

    coupling: str = "laplacian"
    """How the vertices exchange mass: ``laplacian`` (rates ``w_gh``), ``gibbs`` (detailed
    balance, rates ``w_gh exp((V_g - V_h)/2β)``) or ``upwind`` (nonlinear, implicit Euler
    with Newton)."""
    beta: float | str | list[list[float]] = 1.0
    """Temperature β > 0: the diffusion coefficient and the temperature of the Gibbs state.
    A number, or a schedule (annealing): an expression in ``t`` such as
    ``"0.5*exp(-t/20) + 0.02"``, or a table of ``[t, β]`` points such as
    ``[[0, 0.5], [50, 0.02]]``, interpolated geometrically (linearly in log β) and constant
    beyond its ends. A schedule must stay positive and finite on ``[0, t_end]`` (``t_max``
    for ``t_end = "equilibrium"``); it takes the linear schemes (implicit-euler,
    crank-nicolson, bdf2) with the laplacian or gibbs coupling. Each step takes β at its
    end time (Crank–Nicolson: its operator at both ends); ``diagnostics.csv`` gains a
    ``beta`` column and the diagnostics refer to the Gibbs state at the current β."""
    potential: str | None = None
    """Potential ``V_g(x)``, one expression in ``x[0..2]`` and the vertex index ``g``;
    unset: 0."""
    potentials: list[str] | None = None
    """One potential expression per vertex, instead of ``potential``."""
    initial: str | None = None
    """Initial density ``ρ_g(x, 0)``, an expression in ``x`` and ``g``; unset: 1."""
    initials: list[str] | None = None
    """One initial density per vertex, instead of ``initial``."""
    source: str | None = None
    """Optional source ``f_g(x, t)``, an expression in ``x``, ``g`` and ``t``; unset: none."""
    sources: list[str] | None = None
    """One source per vertex, instead of ``source``."""
    gibbs_rates: str = "weighted-mass"
    """``gibbs`` only: the rate-weighted mass matrices ``M[k]`` (``weighted-mass``), or
    ``M diag(k)`` with the rates at the nodes (``nodal``: the coupling is applied from ``M``
    alone, memory linear in N, and the nodal Gibbs state is exactly in detailed balance)."""
    data: str | None = None
    """Per-vertex data: a CSV file with a header and one row per vertex (in vertex order, or
    matched through a ``vertex`` column of indices or a ``label`` column of vertex labels).
    Each numeric column ``name`` is usable in expressions as ``name[g]``, e.g.
    ``potential = "(x[0]-0.5)**2 + s*loss[g]"`` with the number ``s`` written out."""


@dataclass
class TimeSettings:
    """``[time]``: the time scheme and its fixed step."""

    scheme: str = "implicit-euler"
    """``implicit-euler``, ``crank-nicolson``, ``bdf2``, ``jko`` (the linearized minimizing
    movement step) or ``accelerated`` (the damped Hamiltonian flow)."""
    dt: float = 1e-3
    """Time step (> 0); a failed step is retried with halved steps, then ``dt`` resumes."""
    t_end: float | str = 0.1
    """The end time (a whole number of steps of ``dt`` unless ``adaptive``), or
    ``"equilibrium"``: run until the relative entropy H(ρ | ρ_π) falls
    below ``equilibrium_tolerance`` (then ``t_max`` is required)."""
    adaptive: bool = False
    """Adaptive time steps: ``dt`` is the first step, the step is chosen so that the local
    error estimate (step doubling) stays below ``tolerance``, within ``[dt_min, dt_max]``."""
    dt_min: float | None = None
    """Smallest adaptive step (default ``dt`` / 2^20); a step that would need less stops the
    run with status 3."""
    dt_max: float | None = None
    """Largest adaptive step (default: the whole run)."""
    tolerance: float = 1e-4
    """Local error allowed per adaptive step, in the root-mean-square mixed norm
    ``|e_i| / (tol + tol·|ρ_i|)`` over the densities' dofs."""
    equilibrium_tolerance: float = 1e-6
    """With ``t_end = "equilibrium"``: stop once H(ρ | ρ_π) is below this."""
    t_max: float | None = None
    """With ``t_end = "equilibrium"``: the latest time to stop at (status 0 and a message
    when H is still above ``equilibrium_tolerance``)."""
    damping: str | float = "nesterov"
    """``accelerated`` only: the damping γ, ``nesterov`` (γ = 3/t) or a constant ≥ 0."""
    restart: bool = False
    """``accelerated`` only: function-value restart (S = 0 and the 3/t clock reset when the
    free energy rises)."""
    viscosity: float = 0.01
    """``accelerated`` only: ν0 of the vacuum viscosity ``ν0 ρc/(ρ + ρc)`` in the S equation
    (0: none, exact Hamiltonian dynamics)."""
    viscosity_density: float = 1e-6
    """``accelerated`` only: ρc of the vacuum viscosity (> 0)."""

    @property
    def method(self) -> Scheme:
        """:attr:`scheme` as a :class:`Scheme`."""
        return Scheme(self.scheme)


@dataclass
class SolverSettings:
    """``[solver]``: how each step's block system is solved."""

    type: str = "auto"
    """``direct`` (MUMPS LU of the block matrix), ``krylov`` (``ksp_type`` and ``pc_type``
    on it), ``fieldsplit`` (one split per vertex), ``spectral`` (the graph-spectral
    solver) or ``auto`` (``direct`` up to 1e5 unknowns, ``spectral`` above)."""
    inner: str = "auto"
    """Scalar solves of the spectral solver: cached factorizations (``lu``), GAMG (``amg``)
    or ``auto`` (factorizations while they fit in memory)."""
    scalar_layout: str = "auto"
    """Spectral modes dealt to the ranks, each solved whole and serially (``per-rank``), or
    each solved on all ranks (``distributed``); ``auto``: per-rank for factorized scalar
    solves on more than one rank."""
    gibbs_coupling: str = "auto"
    """``gibbs`` with ``weighted-mass`` rates: one weighted mass matrix per directed edge
    (``per-edge``), or the coupling applied from the quadrature points (``quadrature``:
    memory linear in N for any graph); ``auto``: whichever stores less."""
    factorization_precision: str = "auto"
    """Precision of the spectral solver's factorizations where they only precondition
    (MUMPS): ``single`` halves their memory and the bytes each solve reads; ``double``;
    ``auto``: single where MUMPS has it and the scalar problems are well enough
    conditioned."""
    ksp_type: str = "gmres"
    """``krylov`` only: the PETSc KSP type."""
    pc_type: str = "bjacobi"
    """``krylov`` only: the PETSc PC type."""
    rtol: float = 1e-12
    """Relative tolerance of the Krylov solves (``spectral``, ``fieldsplit``, ``krylov``)."""
    atol: float = 1e-50
    """Absolute tolerance of the Krylov solves."""
    max_it: int = 1000
    """Iteration limit of the Krylov solves."""
    max_retries: int = 3
    """Halvings of ``dt`` allowed for a failed step before the run stops with status 3
    (0 to 20; 0 disables retries)."""
    petsc_options: dict[str, Any] = field(default_factory=dict)
    """Any PETSc options, given without the ``rd_`` prefix the command line uses (e.g.
    ``{ ksp_monitor = "" }``); command-line options win."""


@dataclass
class OutputSettings:
    """``[output]``: what a run writes into its run directory."""

    dir: str | None = None
    """Run directory; ``--out`` wins; unset: ``results/<config name>``."""
    fields_every: int = 10
    """Write the densities to ``fields.bp`` every this many steps (0: none)."""
    npz: bool = True
    """Write ``final.npz``, the final densities gathered on rank 0."""
    checkpoint_every: int = 100
    """Steps between checkpoints; 0: only at the end, on failure and on SIGTERM/SIGINT."""
    plots: bool = False
    """PNG figures in ``RUN_DIR/plots`` at the end (seconds of matplotlib, so off by default;
    the built-in default problem turns it on)."""
    fields_vertices: list[int] | str | None = None
    """Vertices whose densities go to ``fields.bp``: a list of vertex indices, or
    ``"top:K"`` for the K vertices of largest Gibbs-state mass (where the mass goes; ties by
    index). Default: every vertex for graphs of at most 16 vertices, else ``"top:16"``."""


@dataclass
class Settings:
    """A whole run's settings: one attribute per TOML section, each a dataclass above."""

    mesh: MeshSettings = field(default_factory=MeshSettings)
    space: SpaceSettings = field(default_factory=SpaceSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    time: TimeSettings = field(default_factory=TimeSettings)
    solver: SolverSettings = field(default_factory=SolverSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The settings as nested plain data, without unset (None) values: TOML has no null."""
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(self):
            section = dataclasses.asdict(getattr(self, f.name))
            out[f.name] = {k: v for k, v in section.items() if v is not None}
        return out

    @property
    def t_stop(self) -> float:
        """The time the run stops at at the latest (``t_end``, or ``t_max`` for equilibrium)."""
        t = self.time
        return t.t_max if t.t_end == EQUILIBRIUM else t.t_end

    @property
    def num_steps(self) -> int:
        """Steps of a fixed-step run; for an adaptive run, the most it can take."""
        if self.time.adaptive:
            return math.ceil(self.t_stop / self.time.dt_min)
        return round(self.t_stop / self.time.dt)


_SECTION_CLASSES = {
    "mesh": MeshSettings,
    "space": SpaceSettings,
    "graph": GraphSettings,
    "model": ModelSettings,
    "time": TimeSettings,
    "solver": SolverSettings,
    "output": OutputSettings,
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _int(key: str, v, *, low: int | None = None, high: int | None = None) -> int:
    if not _is_int(v):
        raise InputError(f"{key} = {v!r}: expected an integer")
    if (low is not None and v < low) or (high is not None and v > high):
        rng = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise InputError(f"{key} = {v!r}: must be in {rng}")
    return v


def _float(key: str, v, *, positive: bool = False, nonnegative: bool = False) -> float:
    if not _is_number(v):
        raise InputError(f"{key} = {v!r}: expected a number")
    v = float(v)
    if not math.isfinite(v):
        raise InputError(f"{key} = {v!r}: must be finite")
    if positive and v <= 0:
        raise InputError(f"{key} = {v!r}: must be > 0")
    if nonnegative and v < 0:
        raise InputError(f"{key} = {v!r}: must be >= 0")
    return v


def _str(key: str, v, choices=None) -> str:
    if not isinstance(v, str):
        raise InputError(f"{key} = {v!r}: expected a string")
    if choices is not None and v not in choices:
        raise InputError(
            f"{key} = {v!r}: must be one of {', '.join(choices)}{_suggest(v, choices)}"
        )
    return v


def _list(key: str, v, item, *, length: int | None = None) -> list:
    if not isinstance(v, list):
        raise InputError(f"{key} = {v!r}: expected a list")
    if length is not None and len(v) != length:
        raise InputError(f"{key} = {v!r}: expected {length} entries, got {len(v)}")
    return [item(f"{key}[{i}]", x) for i, x in enumerate(v)]


def _check_mesh(s: MeshSettings) -> None:
    _str("mesh.shape", s.shape, MESH_SHAPES)
    if s.shape == "file":
        if s.file is None:
            raise InputError("mesh.shape = 'file' needs mesh.file = \"path/to/mesh.msh\"")
        _str("mesh.file", s.file)
        return
    dim = MESH_SHAPES.index(s.shape) + 1
    s.cells = _list("mesh.cells", s.cells, lambda k, v: _int(k, v, low=1), length=dim)
    if s.lower is None:
        s.lower = [0.0] * dim
    if s.upper is None:
        s.upper = [1.0] * dim
    s.lower = _list("mesh.lower", s.lower, _float, length=dim)
    s.upper = _list("mesh.upper", s.upper, _float, length=dim)
    for i, (lo, hi) in enumerate(zip(s.lower, s.upper, strict=True)):
        if not lo < hi:
            raise InputError(f"mesh.lower[{i}] = {lo} must be less than mesh.upper[{i}] = {hi}")
    if s.file is not None:
        raise InputError(f"mesh.file is only used with mesh.shape = 'file' (shape is {s.shape!r})")


def _check_space(s: SpaceSettings) -> None:
    s.degree = _int("space.degree", s.degree, low=1, high=3)
    if s.quadrature_degree is not None:
        s.quadrature_degree = _int("space.quadrature_degree", s.quadrature_degree, low=1, high=30)
    if not isinstance(s.lumping, bool):
        raise InputError(f"space.lumping = {s.lumping!r}: expected true or false")


def _check_graph(s: GraphSettings) -> None:
    _str("graph.kind", s.kind, GRAPH_KINDS)
    if s.n is not None:
        s.n = _int("graph.n", s.n, low=1)
    if s.dim is not None:
        s.dim = _int("graph.dim", s.dim, low=1, high=16)
    if s.shape is not None:
        s.shape = _list("graph.shape", s.shape, lambda k, v: _int(k, v, low=1), length=2)
    s.weight = _float("graph.weight", s.weight, positive=True)
    s.p = _float("graph.p", s.p, nonnegative=True)
    if s.p > 1:
        raise InputError(f"graph.p = {s.p}: must be a probability in [0, 1]")
    s.seed = _int("graph.seed", s.seed, low=0)
    if s.edges is not None and not isinstance(s.edges, list):
        raise InputError(f"graph.edges = {s.edges!r}: expected a list of [g, h, w] triples")
    if s.file is not None:
        _str("graph.file", s.file)
    if s.choices is not None:
        s.choices = _int("graph.choices", s.choices, low=2)
    if s.factors is not None:
        if not isinstance(s.factors, list) or not s.factors or not all(
                isinstance(f, dict) for f in s.factors):
            raise InputError(f"graph.factors = {s.factors!r}: expected a non-empty list of "
                             f"tables such as {{kind = \"complete\", n = 5}}")
    if s.labels is not None and not isinstance(s.labels, str):
        _list("graph.labels", s.labels, _str)
    if s.kind == "hamming" and (s.dim is None or s.choices is None):
        raise InputError("graph.kind = 'hamming' needs graph.dim and graph.choices "
                         "(n = choices**dim vertices)")
    if s.kind == "product" and s.factors is None:
        raise InputError("graph.kind = 'product' needs graph.factors, e.g. "
                         "[{kind = \"complete\", n = 5}, {kind = \"path\", n = 3}]")


def _exprs(key: str, single, many) -> None:
    if single is not None and many is not None:
        raise InputError(f"give either model.{key} or model.{key}s, not both")
    if single is not None:
        _str(f"model.{key}", single)
    if many is not None:
        _list(f"model.{key}s", many, _str)


def _check_model(s: ModelSettings) -> None:
    _str("model.coupling", s.coupling, COUPLINGS)
    if isinstance(s.beta, str) or (isinstance(s.beta, list) and s.beta):
        # A schedule: parsed and checked on [0, t_end] with the expressions
        # (rdgraph.problem.validation.check_schedule), before any collective operation.
        pass
    elif isinstance(s.beta, list):
        raise InputError("model.beta = []: a table needs at least one [t, beta] point")
    elif not _is_number(s.beta):
        raise InputError(f"model.beta = {s.beta!r}: expected a number, an expression in t or "
                         "a table of [t, beta] points")
    else:
        s.beta = _float("model.beta", s.beta, positive=True)
    _exprs("potential", s.potential, s.potentials)
    _exprs("initial", s.initial, s.initials)
    _exprs("source", s.source, s.sources)
    _str("model.gibbs_rates", s.gibbs_rates, GIBBS_RATES)
    if s.data is not None:
        _str("model.data", s.data)


def _check_time(s: TimeSettings) -> None:
    _str("time.scheme", s.scheme, SCHEMES)
    s.dt = _float("time.dt", s.dt, positive=True)
    if not isinstance(s.adaptive, bool):
        raise InputError(f"time.adaptive = {s.adaptive!r}: expected true or false")
    if isinstance(s.t_end, str):
        if s.t_end != EQUILIBRIUM:
            raise InputError(f"time.t_end = {s.t_end!r}: expected a number or 'equilibrium'")
        if s.t_max is None:
            raise InputError("time.t_end = 'equilibrium' needs time.t_max, the latest time "
                             "to stop at if equilibrium is not reached")
        s.t_max = _float("time.t_max", s.t_max, positive=True)
        end_key, end = "time.t_max", s.t_max
    else:
        s.t_end = _float("time.t_end", s.t_end, positive=True)
        if s.t_max is not None:
            raise InputError("time.t_max is only used with time.t_end = 'equilibrium'")
        end_key, end = "time.t_end", s.t_end
    s.equilibrium_tolerance = _float("time.equilibrium_tolerance", s.equilibrium_tolerance,
                                     positive=True)
    s.tolerance = _float("time.tolerance", s.tolerance, positive=True)
    if s.dt_min is not None:
        s.dt_min = _float("time.dt_min", s.dt_min, positive=True)
    if s.dt_max is not None:
        s.dt_max = _float("time.dt_max", s.dt_max, positive=True)
    if not s.adaptive:
        for key in ("dt_min", "dt_max"):
            if getattr(s, key) is not None:
                raise InputError(f"time.{key} is only used with time.adaptive = true")
    else:
        if s.dt_min is None:
            s.dt_min = s.dt / 2**20
        if s.dt_max is None:
            s.dt_max = end
        if s.dt_min > s.dt_max:
            raise InputError(f"time.dt_min = {s.dt_min:g} is larger than time.dt_max = "
                             f"{s.dt_max:g}")
        if not s.dt_min <= s.dt <= s.dt_max:
            raise InputError(f"time.dt = {s.dt:g} (the first adaptive step) must lie in "
                             f"[time.dt_min, time.dt_max] = [{s.dt_min:g}, {s.dt_max:g}]")
    steps = end / s.dt
    if not s.adaptive and steps > 1e8:
        raise InputError(f"{end_key} / time.dt = {steps:.3g} steps: too many")
    if not s.adaptive and (round(steps) < 1
                           or abs(round(steps) - steps) > 1e-8 * max(1.0, steps)):
        whole = max(1, round(steps))
        raise InputError(
            f"{end_key} = {end:g} is not a whole number of steps of time.dt = {s.dt:g} "
            f"({steps:.6g} steps): use {end_key} = {whole * s.dt:.12g} ({whole} steps), or "
            f"time.dt = {end / whole:.12g} to end at {end:g}"
        )
    if s.damping != "nesterov":
        if isinstance(s.damping, str):
            raise InputError(f"time.damping = {s.damping!r}: must be 'nesterov' or a number >= 0")
        s.damping = _float("time.damping", s.damping, nonnegative=True)
    if not isinstance(s.restart, bool):
        raise InputError(f"time.restart = {s.restart!r}: expected true or false")
    s.viscosity = _float("time.viscosity", s.viscosity, nonnegative=True)
    s.viscosity_density = _float("time.viscosity_density", s.viscosity_density, positive=True)


def _check_accelerated(settings: Settings) -> None:
    """What the accelerated scheme needs beyond the per-section checks."""
    if settings.time.method is not Scheme.ACCELERATED:
        return
    if settings.space.degree != 1:
        raise InputError(f"time.scheme = 'accelerated' needs space.degree = 1 (P1 with vertex "
                         f"quadrature), got {settings.space.degree}")
    if settings.model.coupling not in ("laplacian", "gibbs"):
        raise InputError(f"time.scheme = 'accelerated' takes model.coupling = 'laplacian' "
                         f"(log-mean mobility) or 'gibbs', got {settings.model.coupling!r}")
    if settings.model.source is not None or settings.model.sources is not None:
        raise InputError("time.scheme = 'accelerated' has no source term: remove model.source(s)")


def _check_solver(s: SolverSettings) -> None:
    _str("solver.type", s.type, SOLVER_TYPES)
    _str("solver.inner", s.inner, INNER_SOLVERS)
    _str("solver.scalar_layout", s.scalar_layout, SCALAR_LAYOUTS)
    _str("solver.gibbs_coupling", s.gibbs_coupling, GIBBS_COUPLINGS)
    _str("solver.factorization_precision", s.factorization_precision, FACTORIZATION_PRECISIONS)
    _str("solver.ksp_type", s.ksp_type)
    _str("solver.pc_type", s.pc_type)
    s.rtol = _float("solver.rtol", s.rtol, positive=True)
    s.atol = _float("solver.atol", s.atol, positive=True)
    s.max_it = _int("solver.max_it", s.max_it, low=1)
    s.max_retries = _int("solver.max_retries", s.max_retries, low=0, high=20)
    if not isinstance(s.petsc_options, dict):
        raise InputError(f"solver.petsc_options = {s.petsc_options!r}: expected a table")
    for k, v in s.petsc_options.items():
        if not isinstance(v, (str, int, float, bool)):
            raise InputError(f"solver.petsc_options.{k} = {v!r}: expected a string, number or bool")


def _check_output(s: OutputSettings) -> None:
    if s.dir is not None:
        _str("output.dir", s.dir)
    s.fields_every = _int("output.fields_every", s.fields_every, low=0)
    s.checkpoint_every = _int("output.checkpoint_every", s.checkpoint_every, low=0)
    if not isinstance(s.npz, bool):
        raise InputError(f"output.npz = {s.npz!r}: expected true or false")
    if not isinstance(s.plots, bool):
        raise InputError(f"output.plots = {s.plots!r}: expected true or false")
    if s.fields_vertices is not None:
        s.fields_vertices = parse_fields_vertices(s.fields_vertices)


def parse_fields_vertices(value) -> list[int] | str:
    """``output.fields_vertices`` checked: a non-empty list of distinct vertex indices ≥ 0,
    or ``"top:K"`` with K ≥ 1 (normalized). Indices are checked against the graph later.

    Raises:
        InputError: Anything else, naming the key and the value.
    """
    key = "output.fields_vertices"
    if isinstance(value, str):
        head, _, count = value.strip().partition(":")
        if head.strip() == "top" and count.strip().isdigit() and int(count) >= 1:
            return f"top:{int(count)}"
        raise InputError(f"{key} = {value!r}: expected a list of vertex indices or "
                         f"\"top:K\" with K a positive integer")
    if isinstance(value, (list, tuple)) and value:
        if not all(_is_int(v) and v >= 0 for v in value):
            raise InputError(f"{key} = {value!r}: expected vertex indices (integers >= 0)")
        if len(set(value)) != len(value):
            raise InputError(f"{key} = {value!r}: a vertex is listed twice")
        return [int(v) for v in value]
    raise InputError(f"{key} = {value!r}: expected a non-empty list of vertex indices or "
                     f"\"top:K\"")


_CHECKS = {
    "mesh": _check_mesh,
    "space": _check_space,
    "graph": _check_graph,
    "model": _check_model,
    "time": _check_time,
    "solver": _check_solver,
    "output": _check_output,
}


def settings_from_dict(data: dict[str, Any], *, source: str = "config") -> Settings:
    """Build validated settings from nested plain data (as read from TOML).

    Args:
        data: ``{section: {key: value}}``.
        source: Where the data came from, for messages.

    Raises:
        InputError: Unknown sections or keys, wrong types, out-of-range values.
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a table of sections")
    sections = {}
    for name, values in data.items():
        if name not in _SECTION_CLASSES:
            raise InputError(
                f"{source}: unknown section [{name}]{_suggest(name, _SECTION_CLASSES)}; "
                f"sections are {', '.join(_SECTION_CLASSES)}"
            )
        if not isinstance(values, dict):
            raise InputError(f"{source}: [{name}] must be a table, got {values!r}")
        cls = _SECTION_CLASSES[name]
        keys = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in keys:
                raise InputError(
                    f"{source}: unknown key {name}.{key}{_suggest(key, keys)}; "
                    f"[{name}] takes {', '.join(sorted(keys))}"
                )
        sections[name] = cls(**values)
    settings = Settings(**sections)
    for name, check in _CHECKS.items():
        check(getattr(settings, name))
    _check_accelerated(settings)
    _check_combinations(settings)
    return settings


def _check_combinations(s: Settings) -> None:
    """Checks that involve more than one section."""
    if s.time.adaptive and s.time.method in (Scheme.BDF2, Scheme.ACCELERATED):
        # Step doubling restarts every step from ρ^n alone: a one-step scheme is needed.
        raise InputError(f"time.adaptive = true needs a one-step scheme (implicit-euler, "
                         f"crank-nicolson or jko), not time.scheme = {s.time.scheme!r}")
    if s.model.coupling == "upwind":
        # Nonlinear coupling (rdgraph.timestepping.upwind): implicit Euler with Newton, P1,
        # no forcing.
        if s.time.method is not Scheme.IMPLICIT_EULER:
            raise InputError(f"model.coupling = 'upwind' needs time.scheme = 'implicit-euler', "
                             f"got {s.time.scheme!r}")
        if s.space.degree != 1:
            raise InputError(f"model.coupling = 'upwind' needs space.degree = 1, "
                             f"got {s.space.degree}")
        if s.model.source is not None or s.model.sources is not None:
            raise InputError("model.coupling = 'upwind' does not take model.source(s)")
    if s.model.gibbs_rates != "weighted-mass" and (
            s.model.coupling != "gibbs" or s.time.method.nonlinear_unknowns):
        raise InputError(
            f"model.gibbs_rates = {s.model.gibbs_rates!r} applies to coupling = 'gibbs' with "
            f"the linear schemes only (got coupling = {s.model.coupling!r}, "
            f"time.scheme = {s.time.scheme!r})")
    if s.solver.gibbs_coupling != "auto" and (
            s.model.coupling != "gibbs" or s.model.gibbs_rates != "weighted-mass"):
        raise InputError(
            f"solver.gibbs_coupling = {s.solver.gibbs_coupling!r} applies to coupling = 'gibbs' "
            f"with gibbs_rates = 'weighted-mass' (got coupling = {s.model.coupling!r}, "
            f"gibbs_rates = {s.model.gibbs_rates!r})")
    if s.solver.gibbs_coupling == "quadrature" and s.space.lumping:
        raise InputError("solver.gibbs_coupling = 'quadrature' does not take space.lumping = "
                         "true (lumped rates are row sums, stored per node)")
    if s.time.method is Scheme.JKO:
        # The JKO step (rdgraph.timestepping.jko) is a P1 vertex-quadrature scheme for the
        # unforced flow.
        if s.space.degree != 1:
            raise InputError(f"time.scheme = 'jko' needs space.degree = 1, got {s.space.degree}")
        if s.model.source is not None or s.model.sources is not None:
            raise InputError("time.scheme = 'jko' does not take model.source(s): the JKO step "
                             "is the gradient flow of F, without forcing")


def resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative file paths in a config file relative to the file's folder."""
    for section, key in (("mesh", "file"), ("graph", "file"), ("graph", "labels"),
                         ("model", "data")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            data[section][key] = str(base / value)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--set {text!r}: the key must be section.key, e.g. time.dt=1e-3")
    section, key = parts
    if section not in _SECTION_CLASSES:
        raise InputError(
            f"--set {text!r}: unknown section [{section}]{_suggest(section, _SECTION_CLASSES)}"
        )
    keys = {f.name for f in dataclasses.fields(_SECTION_CLASSES[section])}
    if key not in keys:
        raise InputError(f"--set {text!r}: unknown key {section}.{key}{_suggest(key, keys)}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


#: Keys of which a config gives one or the other: a ``--set`` of one removes the other.
EXCLUSIVE_KEYS = {
    ("model", "potential"): "potentials", ("model", "potentials"): "potential",
    ("model", "initial"): "initials", ("model", "initials"): "initial",
    ("model", "source"): "sources", ("model", "sources"): "source",
}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set section.key=value`` strings to nested config data (a copy).

    ``--set model.potential=...`` over a config with ``model.potentials`` replaces the list
    (and the other way round; the same for ``initial(s)`` and ``source(s)``): the command
    line is the only way to unset a key of the file.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # settings_from_dict reports the malformed section
        target[key] = value
        other = EXCLUSIVE_KEYS.get((section, key))
        if other is not None:
            target.pop(other, None)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; relative file paths in it become relative to its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"config file {str(path)!r} cannot be read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    resolve_paths(data, path.resolve().parent)
    return data


def load_settings(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> Settings:
    """Read, override and validate a config; ``path=None`` gives the built-in default problem."""
    if path is None:
        data, source = default_config(), "built-in default"
    else:
        data, source = read_config(path), str(path)
    data = apply_overrides(data, overrides or [])
    return settings_from_dict(data, source=source)

