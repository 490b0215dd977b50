"""A Monte Carlo sampler of the flow: particles ``(x, g)`` whose law solves the PDE.

The PDE of docs/model.md is the forward (Fokker–Planck) equation of a Markov process on
``Ω × G``. Write ``∂_t ρ_g = ∇·(β∇ρ_g + ρ_g∇V_g) + R_g(ρ)``:

* the drift–diffusion part is the law of the reflected Langevin diffusion
  ``dx = −∇V_g(x) dt + sqrt(2β) dW`` (no-flux walls are reflecting walls);
* the reaction part ``R_g = Σ_h (k_hg ρ_h − k_gh ρ_g)`` is the master equation of jumps
  ``g → h`` at rate ``k_gh(x)``: ``k_gh = w_gh`` for ``laplacian`` (since
  ``−(Lρ)_g = Σ_h w_gh(ρ_h − ρ_g)``, the Laplacian's weights, not a normalised chain) and
  ``k_gh(x) = w_gh exp((V_g(x) − V_h(x)) / 2β)`` for ``gibbs``.

So the density of the particles at vertex g, per particle, is ``ρ_g / Σ_h ∫ρ_h``. Each
time step is a Lie splitting: an Euler–Maruyama move folded back into the box, then jumps.
For ``laplacian`` the jump rates do not depend on x and the jump part is sampled exactly
from ``exp(−τL)``; for ``gibbs`` a particle leaves with probability ``1 − exp(−κ(x)τ)``,
``κ = Σ_h k_gh(x)`` at its new position, to ``h`` with probability ``k_gh/κ``.

Pure NumPy. Under MPI each rank owns a share of the particles and its own random stream
(``SeedSequence(seed).spawn``); only the vertex counts are reduced, so a result is
independent of the number of ranks in distribution (not bit for bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rdgraph.errors import InputError
from rdgraph.problem.config import Settings
from rdgraph.problem.expressions import Expression
from rdgraph.problem.graph import Graph
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.problem.validation import graph_from_settings, parse_per_vertex, vertex_data

__all__ = [
    "BOX_SHAPES",
    "ParticleProblem",
    "ParticleSystem",
    "fraction_standard_errors",
    "reflect",
    "sample_jumps",
]

BOX_SHAPES = {"interval": 1, "rectangle": 2, "box": 3}
# Same limit as the FEM model: exp() overflows float64 past ~709.8.
_MAX_EXPONENT = 700.0
# Gauss–Legendre points per cell and direction for the initial masses and density bounds.
_GAUSS_POINTS = 3
_MAX_QUADRATURE_POINTS = 2_000_000


def sample_jumps(rng: np.random.Generator, rates: np.ndarray, dt: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Which particles jump within ``dt`` and to which of their targets.

    Args:
        rng: The random stream.
        rates: Jump rates per particle and target, shape ``(P, D)``, frozen over ``dt``.
        dt: The time step.

    Returns:
        The indices of the particles that leave (probability ``1 − exp(−Σ rates · dt)``)
        and, for each, the target slot drawn with probability proportional to its rate.
    """
    total = rates.sum(axis=1)
    leave = np.flatnonzero(rng.random(len(total)) < -np.expm1(-total * dt))
    if not leave.size:
        return leave, leave
    cumulative = np.cumsum(rates[leave], axis=1)
    u = rng.random(leave.size) * total[leave]
    slot = np.minimum((u[:, None] >= cumulative).sum(axis=1), rates.shape[1] - 1)
    return leave, slot


def reflect(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Fold coordinates back into ``[lower, upper]`` by mirror reflection at the walls, in place.

    Works for any overshoot (a step longer than the box is folded as often as needed), which
    is the law of Brownian motion reflected at both walls.

    Args:
        x: Coordinates, shape ``(d, P)``.
        lower: Lower corner, shape ``(d,)``.
        upper: Upper corner, shape ``(d,)``.

    Returns:
        ``x``.
    """
    width = (upper - lower)[:, None]
    y = np.mod(x - lower[:, None], 2 * width)
    np.copyto(x, lower[:, None] + np.where(y > width, 2 * width - y, y))
    return x


def fraction_standard_errors(fractions: np.ndarray, particles: int) -> np.ndarray:
    """Standard errors ``sqrt(p(1 − p)/n)`` of vertex fractions ``p`` from ``n`` particles.

    The particles are independent and identically distributed, so a vertex count is binomial.
    """
    p = np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0)
    return np.sqrt(p * (1.0 - p) / max(particles, 1))


@dataclass
class ParticleProblem:
    """What the particles need from a config: box, graph, potentials, initial densities.

    Build it with :meth:`from_settings`; it refuses what has no particle picture.

    Attributes:
        graph: The vertex graph.
        lower, upper: Corners of the box ``Ω`` (shape ``(d,)``).
        coupling: ``"laplacian"`` or ``"gibbs"``.
        beta: The temperature.
        potentials: ``V_g``: one expression in ``g`` or one per vertex.
        initials: ``ρ0_g``: one expression in ``g`` or one per vertex.
        cells: The config's mesh cells per direction (the quadrature grid for initial masses).
    """

    graph: Graph
    lower: np.ndarray
    upper: np.ndarray
    coupling: str
    beta: float
    potentials: Expression | list[Expression]
    initials: Expression | list[Expression]
    cells: list[int]
    _quadrature: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False,
                                                               repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ParticleProblem:
        """The particle problem of validated settings (no MPI; identical on every rank).

        Raises:
            InputError: A mesh that is not a box, a source term, non-finite or negative
                initial densities, zero initial mass, non-finite potentials or gibbs rates
                that overflow.
        """
        mesh = settings.mesh
        if mesh.shape not in BOX_SHAPES:
            raise InputError(
                f"mesh.shape = {mesh.shape!r}: particles need a box mesh with walls to reflect "
                f"at ({', '.join(BOX_SHAPES)})"
            )
        model = settings.model
        schedule = BetaSchedule(model.beta)
        if schedule.varies:
            raise InputError(f"model.beta = {model.beta!r} is a temperature schedule: the "
                             "particle sampler takes model.beta as a number")
        if model.source is not None or model.sources is not None:
            raise InputError("model.source(s): a source term has no particle picture "
                             "(particles are neither created nor destroyed); remove it")
        graph = graph_from_settings(settings)
        gdim = BOX_SHAPES[mesh.shape]
        data = vertex_data(model, graph)
        problem = cls(
            graph=graph,
            lower=np.array(mesh.lower, dtype=np.float64),
            upper=np.array(mesh.upper, dtype=np.float64),
            coupling=model.coupling,
            beta=schedule(0.0),
            potentials=parse_per_vertex(model, "potential", graph.n, ("x", "g"), gdim, "0",
                                        data),
            initials=parse_per_vertex(model, "initial", graph.n, ("x", "g"), gdim, "1", data),
            cells=list(mesh.cells),
        )
        problem._check()
        return problem

    @property
    def dim(self) -> int:
        return self.lower.size

    @property
    def volume(self) -> float:
        return float(np.prod(self.upper - self.lower))

    def potential(self, x: np.ndarray, labels: np.ndarray | int) -> np.ndarray:
        """``V_g(x)`` for each particle, ``g`` its label (an int array or one int)."""
        return _per_vertex(self.potentials, x, labels)

    def initial(self, x: np.ndarray, g: int) -> np.ndarray:
        """``ρ0_g(x)`` at points ``x`` (shape ``(d, P)``)."""
        return _per_vertex(self.initials, x, g)

    def gradient(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``∇V_g(x)`` by central differences of the expressions, shape ``(d, P)``.

        The step is 2^-20 of the box width in each direction: the truncation error
        ``h² V'''/6`` and the rounding error ``ε |V| / h`` both stay near 1e-10 relative,
        far below any Monte Carlo error.
        """
        grad = np.empty_like(x)
        shifted = x.copy()
        for i in range(self.dim):
            h = math.ldexp(float(self.upper[i] - self.lower[i]), -20)
            shifted[i] = x[i] + h
            forward = self.potential(shifted, labels)
            shifted[i] = x[i] - h
            backward = self.potential(shifted, labels)
            shifted[i] = x[i]
            grad[i] = (forward - backward) / (2 * h)
        return grad

    def quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        """Composite Gauss–Legendre points ``(d, Q)`` and weights ``(Q,)`` on the mesh's cells.

        Coarsened to at most about 2e6 points, so a fine 3-D mesh stays cheap; computed once.
        """
        if self._quadrature is not None:
            return self._quadrature
        cells = np.array(self.cells)
        total = np.prod(cells) * _GAUSS_POINTS**self.dim
        if total > _MAX_QUADRATURE_POINTS:
            cells = np.maximum(1, (cells * (_MAX_QUADRATURE_POINTS / total) ** (1 / self.dim))
                               .astype(int))
        nodes, weights = np.polynomial.legendre.leggauss(_GAUSS_POINTS)
        axes, axis_weights = [], []
        for i in range(self.dim):
            edges = np.linspace(self.lower[i], self.upper[i], cells[i] + 1)
            half = 0.5 * np.diff(edges)
            mid = 0.5 * (edges[1:] + edges[:-1])
            axes.append((mid[:, None] + half[:, None] * nodes[None, :]).ravel())
            axis_weights.append((half[:, None] * weights[None, :]).ravel())
        grids = np.meshgrid(*axes, indexing="ij")
        wgrids = np.meshgrid(*axis_weights, indexing="ij")
        points = np.array([a.ravel() for a in grids])
        w = np.prod(np.array([a.ravel() for a in wgrids]), axis=0)
        self._quadrature = (points, w)
        return self._quadrature

    def initial_masses(self) -> np.ndarray:
        """``∫ρ0_g`` for every vertex, by composite Gauss–Legendre quadrature."""
        points, w = self.quadrature()
        return np.array([w @ self.initial(points, g) for g in range(self.graph.n)])

    def _check(self) -> None:
        points, w = self.quadrature()
        # The corners as well: the maximum of a density is often on the boundary.
        corners = np.array(np.meshgrid(*zip(self.lower, self.upper), indexing="ij")).reshape(
            self.dim, -1)
        points = np.concatenate([points, corners], axis=1)
        potentials = []
        for g in range(self.graph.n):
            rho0 = self.initial(points, g)
            if not np.isfinite(rho0).all():
                raise InputError(f"model.initial for vertex g = {g} is not finite (NaN or inf) "
                                 "in the box")
            if (rho0 < 0).any():
                i = int(np.argmin(rho0))
                raise InputError(
                    f"model.initial for vertex g = {g} is negative ({rho0[i]:.3g} at x = "
                    f"{points[:, i].round(6).tolist()}): particles sample a density >= 0")
            v = self.potential(points, g)
            if not np.isfinite(v).all():
                raise InputError(f"model.potential for vertex g = {g} is not finite (NaN or inf) "
                                 "in the box")
            potentials.append(v)
        if not self.initial_masses().sum() > 0:
            raise InputError("the initial densities have zero total mass: nothing to sample")
        if self.coupling == "gibbs":
            largest = max((float(np.max(np.abs(potentials[g] - potentials[h])))
                           for g, h, _ in self.graph.edges), default=0.0) / (2 * self.beta)
            if largest > _MAX_EXPONENT:
                raise InputError(
                    f"gibbs rates overflow: |V_g - V_h| / (2 beta) reaches {largest:.4g} in the "
                    f"box (limit {_MAX_EXPONENT:g}) with model.beta = {self.beta}")


def _per_vertex(exprs, x: np.ndarray, labels) -> np.ndarray:
    """Evaluate one expression in ``g`` (vectorized over labels) or one expression per vertex."""
    if isinstance(exprs, Expression):
        return exprs.evaluate(x, g=labels)
    if np.ndim(labels) == 0:
        return exprs[int(labels)].evaluate(x)
    out = np.empty(x.shape[1])
    for g, expr in enumerate(exprs):
        mask = labels == g
        if mask.any():
            out[mask] = expr.evaluate(x[:, mask])
    return out


class ParticleSystem:
    """This rank's particles: positions ``x`` (shape ``(d, P)``) and vertex labels ``g``.

    Args:
        problem: The particle problem.
        count: Particles on this rank.
        rng: This rank's random generator (one independent stream per rank).
    """

    def __init__(self, problem: ParticleProblem, count: int, rng: np.random.Generator):
        self.problem = problem
        self.rng = rng
        # Rejection-sampling proposals and acceptances, for the acceptance rate.
        self.proposals = 0
        self.accepted = 0
        self.x, self.labels = self._sample_initial(count)
        self._jump_setup()

    @property
    def count(self) -> int:
        return self.labels.size

    # -- initial state ----------------------------------------------------------------------
    def _sample_initial(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels from the initial vertex masses, positions by rejection from each ``ρ0_g``."""
        p = self.problem
        masses = p.initial_masses()
        labels = self.rng.choice(p.graph.n, size=count, p=masses / masses.sum())
        x = np.empty((p.dim, count))
        points, _ = p.quadrature()
        for g in range(p.graph.n):
            where = np.flatnonzero(labels == g)
            if where.size:
                x[:, where] = self._rejection(g, where.size, float(p.initial(points, g).max()),
                                              masses[g] / p.volume)
        return x, labels.astype(np.int64)

    def _rejection(self, g: int, count: int, peak: float, mean: float) -> np.ndarray:
        """``count`` points with density ∝ ``ρ0_g``: uniform proposals under a bound.

        The bound starts 25 % above the largest value on the quadrature grid. A proposal
        above the bound would bias the sample, so then the bound is raised and the vertex
        is sampled again from scratch. Batches are sized by the expected acceptance rate
        ``mean / bound``, ``mean`` the average of ``ρ0_g`` over the box: first from the
        quadrature, then from the last batch of proposals.
        """
        p = self.problem
        bound = 1.25 * peak
        accepted: list[np.ndarray] = []
        have = 0
        while have < count:
            rate = max(mean / bound, 1e-6)
            batch = int(min(max(1024, 1.2 * (count - have) / rate), 10_000_000))
            u = self.rng.random((p.dim, batch))
            proposal = p.lower[:, None] + (p.upper - p.lower)[:, None] * u
            values = p.initial(proposal, g)
            self.proposals += batch
            # The proposals estimate the box average better than a grid that missed a peak.
            mean = float(values.mean())
            if values.max() > bound:
                bound = 1.25 * float(values.max())
                accepted, have = [], 0
                continue
            keep = proposal[:, self.rng.random(batch) * bound < values]
            self.accepted += keep.shape[1]
            accepted.append(keep)
            have += keep.shape[1]
        return np.concatenate(accepted, axis=1)[:, :count]

    # -- dynamics ---------------------------------------------------------------------------
    def _jump_setup(self) -> None:
        # From the CSR rows: O(N · max degree) memory, no dense (N, N) weight matrix.
        m = self.problem.graph.matrix
        n = m.shape[0]
        counts = np.diff(m.indptr)
        degree = max(1, int(counts.max(initial=0)))
        # Neighbour table padded with the vertex itself at weight 0 (a null jump).
        self._neighbours = np.tile(np.arange(n)[:, None], (1, degree))
        self._weights = np.zeros((n, degree))
        rows = np.repeat(np.arange(n), counts)
        slots = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
        self._neighbours[rows, slots] = m.indices
        self._weights[rows, slots] = m.data
        self._transition_dt = None

    def _laplacian_cumulative(self, dt: float) -> np.ndarray:
        """Row-cumulative ``exp(−dt L)``: the exact jump law over ``dt`` (rates w_gh)."""
        if self._transition_dt != dt:
            lam, q = self.problem.graph.spectrum()
            transition = (q * np.exp(-dt * lam)) @ q.T
            transition = np.clip(transition, 0.0, None)  # rounding below 0
            transition /= transition.sum(axis=1, keepdims=True)
            self._cumulative = np.cumsum(transition, axis=1)
            self._transition_dt = dt
        return self._cumulative

    def step(self, dt: float) -> None:
        """Advance by ``dt``: Euler–Maruyama move with reflection, then jumps."""
        p = self.problem
        if self.count == 0:
            return
        with np.errstate(all="ignore"):
            drift = p.gradient(self.x, self.labels)
            noise = self.rng.standard_normal(self.x.shape)
            self.x += -dt * drift + math.sqrt(2 * p.beta * dt) * noise
            reflect(self.x, p.lower, p.upper)
            if p.coupling == "laplacian":
                self._jump_laplacian(dt)
            else:
                self._jump_gibbs(dt)

    def _jump_laplacian(self, dt: float) -> None:
        cumulative = self._laplacian_cumulative(dt)[self.labels]
        u = self.rng.random(self.count)
        new = (u[:, None] >= cumulative).sum(axis=1)
        self.labels = np.minimum(new, cumulative.shape[1] - 1)

    def _jump_gibbs(self, dt: float) -> None:
        p = self.problem
        here = p.potential(self.x, self.labels)
        targets = self._neighbours[self.labels]  # (P, D)
        rates = self._weights[self.labels]
        for j in range(targets.shape[1]):
            there = p.potential(self.x, targets[:, j])
            rates[:, j] *= np.exp((here - there) / (2 * p.beta))
        which, slot = sample_jumps(self.rng, rates, dt)
        self.labels[which] = targets[which, slot]

    def finite(self) -> bool:
        """Whether every position is finite (a potential NaN somewhere spoils the drift)."""
        return bool(np.isfinite(self.x).all())

    def counts(self) -> np.ndarray:
        """Particles per vertex on this rank."""
        return np.bincount(self.labels, minlength=self.problem.graph.n)
