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
(its law is ``exp(−τL)``) by running each particle's jump chain through the step: a holding
time of rate ``deg_g = Σ_h w_gh``, then a neighbour h with probability ``w_gh / deg_g``, until
the step is over. For ``gibbs`` a particle leaves with probability ``1 − exp(−κ(x)τ)``,
``κ = Σ_h k_gh(x)`` at its new position, to ``h`` with probability ``k_gh/κ``.

Large graphs: the jumps read the neighbours from the graph's CSR arrays, so memory is
O(N + E) for the graph and O(Σ_i deg(g_i)) for the particles' candidate jumps (no padded
``(N, max degree)`` table, no ``(N, N)`` transition matrix), and the set-up evaluates the
initial densities and potentials for blocks of vertices at once.

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
from rdgraph.problem.validation import graph_from_settings, parse_per_vertex, vertex_data

__all__ = [
    "BOX_SHAPES",
    "ParticleProblem",
    "ParticleSystem",
    "fraction_standard_errors",
    "reflect",
    "sample_jumps",
    "sample_segments",
]

BOX_SHAPES = {"interval": 1, "rectangle": 2, "box": 3}
# Same limit as the FEM model: exp() overflows float64 past ~709.8.
_MAX_EXPONENT = 700.0
# Gauss–Legendre points per cell and direction for the initial masses and density bounds.
_GAUSS_POINTS = 3
_MAX_QUADRATURE_POINTS = 2_000_000
# Values evaluated at once when expressions are evaluated for blocks of vertices (set-up) and
# proposals per round of the initial rejection sampling: 8 MiB per float64 array.
_BLOCK_VALUES = 1 << 20
# Proposals per particle and round of the rejection sampling, at most.
_MAX_TRIES = 64


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


def _segment_search(cumulative: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    u: np.ndarray) -> np.ndarray:
    """For each segment ``[start, end)`` of ``cumulative`` (non-decreasing within it), the
    first index whose value exceeds ``u`` (the last of the segment if none does: rounding).

    A bisection of all segments at once: ``log2(longest segment)`` vectorized passes.
    """
    lo, hi = starts.astype(np.int64), ends.astype(np.int64) - 1
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        right = cumulative[mid] <= u
        lo = np.where(active & right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)


def sample_segments(rng: np.random.Generator, offsets: np.ndarray, rates: np.ndarray,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """One entry per segment, drawn with probability proportional to its rate.

    The candidates are stored flat (CSR): segment ``i`` holds ``rates[offsets[i]:offsets[i+1]]``.

    Args:
        rng: The random stream.
        offsets: Segment boundaries, shape ``(S + 1,)``, every segment non-empty where drawn.
        rates: Non-negative rates, shape ``(offsets[-1],)``, a positive sum per drawn segment.
        rows: The segments to draw for (default all).

    Returns:
        The flat index of the entry drawn for each segment of ``rows``.
    """
    rows = np.arange(offsets.size - 1) if rows is None else rows
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    owner = np.repeat(np.arange(rows.size), lengths)
    flat = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths) \
        + np.repeat(starts, lengths)
    # Each segment normalised to sum 1 before the running sum, so that the local sums have an
    # absolute rounding error of at most (segments before) · ε: rates of very different size
    # in other segments (gibbs rates span many orders) cannot swamp a segment's own.
    chosen = rates[flat]
    chosen = chosen / np.bincount(owner, weights=chosen, minlength=rows.size)[owner]
    running = np.cumsum(chosen)
    local_start = np.concatenate([[0.0], running])[np.cumsum(lengths) - lengths]
    local = running - np.repeat(local_start, lengths)
    first = np.cumsum(lengths) - lengths
    slot = _segment_search(local, first, first + lengths, rng.random(rows.size))
    return flat[slot]


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
    # Initial masses and peaks per vertex, computed once (by the checks or on demand).
    _cache: dict = field(default_factory=dict, init=False, repr=False)

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
            beta=float(model.beta),
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
        """``∫ρ0_g`` for every vertex, by composite Gauss–Legendre quadrature (computed once)."""
        return self._initial_summary()[0].copy()

    def initial_peaks(self) -> np.ndarray:
        """``max ρ0_g`` over the quadrature points, for every vertex (computed once)."""
        return self._initial_summary()[1].copy()

    def vertex_blocks(self, points: int):
        """Consecutive blocks of vertices whose values at ``points`` points fit in one block
        of about ``_BLOCK_VALUES`` values."""
        step = max(1, _BLOCK_VALUES // max(points, 1))
        for first in range(0, self.graph.n, step):
            yield np.arange(first, min(self.graph.n, first + step))

    def _initial_summary(self) -> tuple[np.ndarray, np.ndarray]:
        if "initial" not in self._cache:
            points, w = self.quadrature()
            masses, peaks = np.empty(self.graph.n), np.empty(self.graph.n)
            for block in self.vertex_blocks(points.shape[1]):
                rho0 = _grid_values(self.initials, points, block)
                masses[block] = rho0 @ w
                peaks[block] = rho0.max(axis=1)
            self._cache["initial"] = (masses, peaks)
        return self._cache["initial"]

    def _check(self) -> None:
        quadrature, w = self.quadrature()
        q = quadrature.shape[1]
        # The corners as well: the maximum of a density is often on the boundary.
        corners = np.array(np.meshgrid(*zip(self.lower, self.upper, strict=True),
                                       indexing="ij")).reshape(self.dim, -1)
        points = np.concatenate([quadrature, corners], axis=1)
        n = self.graph.n
        masses, peaks = np.empty(n), np.empty(n)
        g, h, _ = self.graph.edge_arrays()
        # float32 is ample for the overflow check below (a limit of 700 in the exponent) and
        # halves the (N, points) table.
        potentials = (np.empty((n, points.shape[1]), dtype=np.float32)
                      if self.coupling == "gibbs" and g.size else None)
        for block in self.vertex_blocks(points.shape[1]):
            rho0 = _grid_values(self.initials, points, block)
            bad = ~np.isfinite(rho0)
            if bad.any():
                raise InputError(f"model.initial for vertex g = {block[np.argwhere(bad)[0, 0]]} "
                                 "is not finite (NaN or inf) in the box")
            if (rho0 < 0).any():
                row = int(np.flatnonzero((rho0 < 0).any(axis=1))[0])
                i = int(np.argmin(rho0[row]))
                raise InputError(
                    f"model.initial for vertex g = {block[row]} is negative "
                    f"({rho0[row, i]:.3g} at x = {points[:, i].round(6).tolist()}): particles "
                    "sample a density >= 0")
            masses[block] = rho0[:, :q] @ w
            peaks[block] = rho0[:, :q].max(axis=1)
            v = _grid_values(self.potentials, points, block)
            bad = ~np.isfinite(v)
            if bad.any():
                raise InputError(f"model.potential for vertex g = "
                                 f"{block[np.argwhere(bad)[0, 0]]} is not finite (NaN or inf) "
                                 "in the box")
            if potentials is not None:
                potentials[block] = v
        self._cache["initial"] = (masses, peaks)
        if not masses.sum() > 0:
            raise InputError("the initial densities have zero total mass: nothing to sample")
        if potentials is not None:
            largest = 0.0
            step = max(1, _BLOCK_VALUES // points.shape[1])
            for first in range(0, g.size, step):
                edges = slice(first, first + step)
                difference = potentials[g[edges]].astype(np.float64) - potentials[h[edges]]
                largest = max(largest, float(np.abs(difference).max()))
            largest /= 2 * self.beta
            if largest > _MAX_EXPONENT:
                raise InputError(
                    f"gibbs rates overflow: |V_g - V_h| / (2 beta) reaches {largest:.4g} in the "
                    f"box (limit {_MAX_EXPONENT:g}) with model.beta = {self.beta}")


def _grid_values(exprs, points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Values of one expression in ``g`` or one per vertex at ``points`` (``(d, Q)``) for each of
    ``vertices``: shape ``(len(vertices), Q)``. One expression is evaluated for the whole block
    at once (the points repeated per vertex), as NumPy is fast per call and slow per vertex."""
    q = points.shape[1]
    if isinstance(exprs, Expression):
        tiled = np.tile(points, (1, vertices.size))
        return exprs.evaluate(tiled, g=np.repeat(vertices, q)).reshape(vertices.size, q)
    return np.array([exprs[int(g)].evaluate(points) for g in vertices]).reshape(vertices.size, q)


def _per_vertex(exprs, x: np.ndarray, labels) -> np.ndarray:
    """Evaluate one expression in ``g`` (vectorized over labels) or one expression per vertex."""
    if isinstance(exprs, Expression):
        return exprs.evaluate(x, g=labels)
    if np.ndim(labels) == 0:
        return exprs[int(labels)].evaluate(x)
    # Grouped by vertex with one sort: a mask per vertex would cost O(N · P).
    out = np.empty(x.shape[1])
    if not out.size:
        return out
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    for g, part in zip(present, np.split(order, starts[1:]), strict=True):
        out[part] = exprs[int(g)].evaluate(x[:, part])
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
        """Labels from the initial vertex masses, positions by rejection from each ``ρ0_g``.

        Rejection sampling of all particles at once: uniform proposals in the box, accepted
        with probability ``ρ0_g(x) / bound_g``, the first accepted proposal of each particle
        kept. The bound starts 25 % above the largest value on the quadrature grid. A proposal
        above its vertex's bound would bias the sample, so then the bound is raised and every
        particle of that vertex is sampled again from scratch. Each round gives a particle
        about ``1.2 / rate`` proposals (at most ``_MAX_TRIES``), ``rate = mean_g / bound_g``
        the expected acceptance rate, ``mean_g`` the average of ``ρ0_g`` over the box.
        """
        p = self.problem
        masses = p.initial_masses()
        labels = self.rng.choice(p.graph.n, size=count, p=masses / masses.sum()).astype(np.int64)
        x = np.empty((p.dim, count))
        bound = 1.25 * p.initial_peaks()
        mean = masses / p.volume
        done = np.zeros(count, dtype=bool)
        pending = np.arange(count)
        while pending.size:
            g = labels[pending]
            rate = np.maximum(mean[g] / np.where(bound[g] > 0, bound[g], 1.0), 1e-6)
            tries = np.clip(np.ceil(1.2 / rate), 1, _MAX_TRIES).astype(np.int64)
            tries = np.minimum(tries, max(1, _BLOCK_VALUES * 4 // pending.size))
            owner = np.repeat(pending, tries)  # sorted, as pending is
            proposal = p.lower[:, None] + (p.upper - p.lower)[:, None] * self.rng.random(
                (p.dim, owner.size))
            vertex = labels[owner]
            values = p.initial(proposal, vertex)
            self.proposals += owner.size
            accept = self.rng.random(owner.size) * bound[vertex] < values
            over = values > bound[vertex]
            if over.any():
                raised = np.unique(vertex[over])
                np.maximum.at(bound, vertex[over], 1.25 * values[over])
                accept &= ~np.isin(vertex, raised)
                done[np.isin(labels, raised)] = False
            self.accepted += int(accept.sum())
            winners, first = np.unique(owner[accept], return_index=True)
            x[:, winners] = proposal[:, np.flatnonzero(accept)[first]]
            done[winners] = True
            pending = np.flatnonzero(~done)
        return x, labels

    # -- dynamics ---------------------------------------------------------------------------
    def _jump_setup(self) -> None:
        # The graph's CSR arrays, and each row's running sum of its weights normalised to 1:
        # O(N + E) memory, whatever the degrees.
        m = self.problem.graph.matrix
        self._indptr = m.indptr.astype(np.int64)
        self._indices = m.indices.astype(np.int64)
        self._edge_weights = m.data
        counts = np.diff(self._indptr)
        self._degree_counts = counts
        self._degrees = np.add.reduceat(m.data, self._indptr[:-1]) if m.nnz else np.zeros(
            m.shape[0])
        self._degrees[counts == 0] = 0.0  # reduceat repeats the next value for empty rows
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = m.data / np.repeat(self._degrees, counts)
        running = np.cumsum(normalised)
        start = np.concatenate([[0.0], running])[self._indptr[:-1]]
        self._row_cumulative = running - np.repeat(start, counts)

    def neighbour_slots(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours and edge weights of each particle's vertex, padded per particle.

        Shape ``(m, D)`` with ``D`` the largest degree among ``labels``; a vertex with fewer
        neighbours is padded with itself at weight 0 (a null jump). O(m · D): for particle
        methods that handle a particle's candidate jumps as a row (the accelerated particles).
        """
        labels = np.asarray(labels, dtype=np.int64)
        counts = self._degree_counts[labels]
        width = max(1, int(counts.max(initial=0)))
        targets = np.repeat(labels[:, None], width, axis=1)
        weights = np.zeros((labels.size, width))
        rows = np.repeat(np.arange(labels.size), counts)
        slots = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        flat = np.repeat(self._indptr[labels], counts) + slots
        targets[rows, slots] = self._indices[flat]
        weights[rows, slots] = self._edge_weights[flat]
        return targets, weights

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
        """The exact jump chain over ``dt``: holding times of rate ``deg_g``, then a neighbour
        with probability ``w_gh / deg_g``; O(jumps) work, no transition matrix."""
        active = np.arange(self.count)
        remaining = np.full(self.count, dt)
        while active.size:
            rate = self._degrees[self.labels[active]]
            with np.errstate(divide="ignore"):
                wait = self.rng.exponential(size=active.size) / rate  # inf at rate 0
            jump = wait < remaining
            active, remaining = active[jump], remaining[jump] - wait[jump]
            if not active.size:
                return
            g = self.labels[active]
            slot = _segment_search(self._row_cumulative, self._indptr[g], self._indptr[g + 1],
                                   self.rng.random(active.size))
            self.labels[active] = self._indices[slot]

    def _jump_gibbs(self, dt: float) -> None:
        """Leave with probability ``1 − exp(−κ(x)τ)``, to h with probability ``k_gh/κ``.

        When every particle's vertex has the same number of neighbours (a regular graph such
        as H(d, q)), the candidates are a ``(P, degree)`` array read from the CSR rows and the
        potentials are evaluated one column at a time, so positions are never copied per
        candidate; otherwise every particle's candidates go into one flat array of
        ``Σ_i deg(g_i)`` entries (a star's hub costs its degree for its own particles only).
        """
        p = self.problem
        labels = self.labels
        counts = self._degree_counts[labels]
        here = p.potential(self.x, labels)
        width = int(counts.max(initial=0))
        if width == 0:
            return
        if (counts == width).all():
            slots = self._indptr[labels][:, None] + np.arange(width)
            targets, rates = self._indices[slots], self._edge_weights[slots]
            for j in range(width):
                there = p.potential(self.x, targets[:, j])
                rates[:, j] *= np.exp(self._exponent(here, there))
            which, slot = sample_jumps(self.rng, rates, dt)
            self.labels[which] = targets[which, slot]
            return
        owner = np.repeat(np.arange(self.count), counts)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        flat = np.repeat(self._indptr[labels], counts) + np.arange(owner.size) \
            - np.repeat(offsets[:-1], counts)
        targets = self._indices[flat]
        there = p.potential(np.take(self.x, owner, axis=1), targets)
        rates = self._edge_weights[flat] * np.exp(self._exponent(here[owner], there))
        total = np.bincount(owner, weights=rates, minlength=self.count)
        leave = np.flatnonzero(self.rng.random(self.count) < -np.expm1(-total * dt))
        if leave.size:
            self.labels[leave] = targets[sample_segments(self.rng, offsets, rates, leave)]

    def _exponent(self, here: np.ndarray, there: np.ndarray) -> np.ndarray:
        """``(V_g − V_h)/2β``, clipped as the FEM rates are: beyond, exp overflows (the
        set-up refuses potentials that get there in the box)."""
        return np.clip((here - there) / (2 * self.problem.beta), -_MAX_EXPONENT, _MAX_EXPONENT)

    def finite(self) -> bool:
        """Whether every position is finite (a potential NaN somewhere spoils the drift)."""
        return bool(np.isfinite(self.x).all())

    def counts(self) -> np.ndarray:
        """Particles per vertex on this rank."""
        return np.bincount(self.labels, minlength=self.problem.graph.n)
