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
GRAPH_KINDS = ("path", "cycle", "complete", "star", "hypercube", "grid", "random", "edges", "file")
COUPLINGS = ("laplacian", "gibbs", "upwind")
GIBBS_RATES = ("weighted-mass", "nodal")
SCHEMES = ("implicit-euler", "crank-nicolson", "bdf2", "jko", "accelerated")


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
    shape: str = "rectangle"
    cells: list[int] = field(default_factory=lambda: [32, 32])
    lower: list[float] | None = None
    upper: list[float] | None = None
    file: str | None = None


@dataclass
class SpaceSettings:
    degree: int = 1
    # None: 2*degree + 2, enough for the polynomial parts of every form.
    quadrature_degree: int | None = None
    # Row-sum (lumped) mass for the time derivative and the reaction terms: see operators.py.
    lumping: bool = False


@dataclass
class GraphSettings:
    kind: str = "path"
    n: int | None = None
    dim: int | None = None
    shape: list[int] | None = None
    weight: float = 1.0
    p: float = 0.5
    edges: list[list[float]] | None = None
    file: str | None = None
    seed: int = 0


@dataclass
class ModelSettings:
    coupling: str = "laplacian"
    beta: float = 1.0
    potential: str | None = None
    potentials: list[str] | None = None
    initial: str | None = None
    initials: list[str] | None = None
    source: str | None = None
    sources: list[str] | None = None
    # gibbs only: the rate-weighted mass matrices M[k] of docs/model.md ("weighted-mass"), or
    # M diag(k) with the rates at the nodes ("nodal": the coupling is applied from M alone,
    # memory linear in N, and the nodal Gibbs state is exactly in detailed balance).
    gibbs_rates: str = "weighted-mass"


@dataclass
class TimeSettings:
    scheme: str = "implicit-euler"
    dt: float = 1e-3
    t_end: float = 0.1
    # scheme = "accelerated" only (see rdgraph/timestepping/accelerated.py): γ = 3/t or a
    # constant γ >= 0, function-value restart, and the viscosity ν0 ρc/(ρ + ρc) in the S equation.
    damping: str | float = "nesterov"
    restart: bool = False
    viscosity: float = 0.01
    viscosity_density: float = 1e-6

    @property
    def method(self) -> Scheme:
        """:attr:`scheme` as a :class:`Scheme`."""
        return Scheme(self.scheme)


@dataclass
class SolverSettings:
    type: str = "auto"
    # Scalar solves of the spectral solver: cached LU, AMG, or "auto" (LU for small meshes).
    inner: str = "auto"
    # Spectral modes dealt to the ranks, each solved whole and serially ("per-rank"), or each
    # solved on all ranks ("distributed"); "auto": per-rank for factorized scalar solves.
    scalar_layout: str = "auto"
    # gibbs with weighted-mass rates: one weighted mass matrix per directed edge, or the
    # coupling applied from the quadrature points (memory linear in N for any graph);
    # "auto": whichever stores less.
    gibbs_coupling: str = "auto"
    # Precision of the spectral solver's factorizations where they only precondition (MUMPS):
    # "single" halves their memory and the bytes each solve reads; "auto": single where MUMPS
    # can and the scalar problems are well enough conditioned (rdgraph.solvers.precision).
    factorization_precision: str = "auto"
    ksp_type: str = "gmres"
    pc_type: str = "bjacobi"
    rtol: float = 1e-12
    atol: float = 1e-50
    max_it: int = 1000
    # Halvings of dt allowed for a failed step before the run stops with status 3.
    max_retries: int = 3
    petsc_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputSettings:
    dir: str | None = None
    fields_every: int = 10
    npz: bool = True
    # Steps between checkpoints; 0: only at the end, on failure and on SIGTERM/SIGINT.
    checkpoint_every: int = 100
    # PNG figures in RUN_DIR/plots at the end (seconds of matplotlib): off by default
    # so that batch runs and sweeps stay lean; the built-in default problem turns it on.
    plots: bool = False


@dataclass
class Settings:
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
    def num_steps(self) -> int:
        return round(self.time.t_end / self.time.dt)


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
    for i, (lo, hi) in enumerate(zip(s.lower, s.upper)):
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


def _exprs(key: str, single, many) -> None:
    if single is not None and many is not None:
        raise InputError(f"give either model.{key} or model.{key}s, not both")
    if single is not None:
        _str(f"model.{key}", single)
    if many is not None:
        _list(f"model.{key}s", many, _str)


def _check_model(s: ModelSettings) -> None:
    _str("model.coupling", s.coupling, COUPLINGS)
    s.beta = _float("model.beta", s.beta, positive=True)
    _exprs("potential", s.potential, s.potentials)
    _exprs("initial", s.initial, s.initials)
    _exprs("source", s.source, s.sources)
    _str("model.gibbs_rates", s.gibbs_rates, GIBBS_RATES)


def _check_time(s: TimeSettings) -> None:
    _str("time.scheme", s.scheme, SCHEMES)
    s.dt = _float("time.dt", s.dt, positive=True)
    s.t_end = _float("time.t_end", s.t_end, positive=True)
    steps = s.t_end / s.dt
    if steps > 1e8:
        raise InputError(f"time.t_end / time.dt = {steps:.3g} steps: too many")
    if round(steps) < 1 or abs(round(steps) - steps) > 1e-8 * max(1.0, steps):
        whole = max(1, round(steps))
        raise InputError(
            f"time.t_end = {s.t_end:g} is not a whole number of steps of time.dt = {s.dt:g} "
            f"({steps:.6g} steps): use time.t_end = {whole * s.dt:.12g} ({whole} steps), or "
            f"time.dt = {s.t_end / whole:.12g} to end at t_end = {s.t_end:g}"
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
    for section in ("mesh", "graph"):
        value = data.get(section, {}).get("file") if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            data[section]["file"] = str(base / value)


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

