"""The accelerated (damped Hamiltonian) flow as interacting particles: ``--dynamics accelerated``.

The accelerated flow of :mod:`rdgraph.timestepping.accelerated` (issue 8),

    ∂_t ρ_g = −∇·(ρ_g ∇S_g) + Σ_h θ_gh(ρ)(S_g − S_h)
    ∂_t S_g + γ S_g + ½|∇S_g|² + ½ Σ_h ∂_{ρ_g}θ_gh (S_g − S_h)² + β log ρ_g + V_g = 0,

is a transport by the velocity field ``∇S_g`` plus a mass exchange between vertices. Its
particle picture: a particle carries a position ``X``, a velocity ``P = ∇S_g(X)`` (``V`` is the
potential), a vertex ``g`` and the value ``S = S_g(X)`` along its path. Differentiating the
S equation along ``Ẋ = P`` (method of characteristics) gives

    Ẋ = P
    Ṗ = −γ P − ∇V_g(X) − β ∇log ρ̂_g(X) − ∇Q(X)   (∇log ρ̂ in the symmetric form of
                                                     ``estimates``)
    Ṡ = ½|P|² − γ S − β log ρ̂_g(X) − V_g(X) − Q(X)

with ``S = 0`` and ``P = 0`` at the start and at every restart, and the exchange force
``−∇Q``, ``Q = ½ Σ_h ∂_{ρ_g}θ_gh (Ŝ_g − Ŝ_h)²``, in Ṗ (the gradient of the ∂θ term of the S
equation, from the kernel sums' analytic gradients; it vanishes when ``ρ_h/ρ_g`` and
``S_g − S_h`` do not depend on x, as in the two-layer test of issue 8). ``ρ̂_g`` is a Gaussian
kernel density estimate of the particles at g (see :class:`KernelDensity`). The exchange
term moves mass from h to g at the rate ``θ_gh (S_g − S_h)`` per volume; a particle at g jumps
to h at the rate

    θ_gh(ρ̂)(x) (Ŝ_h(x) − Ŝ_g(x))_+ / ρ̂_g(x)

which reproduces it: the outflow ``θ (S_h − S_g)_+`` minus the inflow ``θ (S_g − S_h)_+``. The
mobilities are 1-homogeneous, so only the ratio ``ρ̂_h/ρ̂_g`` enters: ``laplacian`` (log-mean)
``θ_gh/ρ_g = (w_gh/β) Λ(1, r)``, ``r = ρ̂_h/ρ̂_g``; ``gibbs``
``θ_gh/ρ_g = (w_gh/β) e^{δ/2} Λ(1, r e^{−δ})``, ``δ = (V_g − V_h)/β``. ``Ŝ_g(x)``, ``Ŝ_h(x)``
and ``P̂_h(x)`` are Nadaraya–Watson kernel regressions of the particles' values at g and h
(both regressed, so that their smoothing biases cancel in the difference). A jumping particle
takes the S and P of its new vertex, ``Ŝ_h(x)`` and ``P̂_h(x)``. A vertex without particles
near x has ``ρ̂_h(x) = 0`` and ``Λ(1, 0) = 0``: nothing jumps there (the log-mean mobility
vanishes at vacuum, in the PDE as well).

Time stepping (first order): from the state at t^n, with all estimates taken there,

    P ← a P + b f,   S ← a S + b (½|P|² − β log ρ̂_g − V_g − Q),   X ← X + τ P

(symplectic Euler: the new P moves X), then the jumps with probability ``1 − exp(−κτ)``.
The damping is integrated exactly for a frozen force: ``a = exp(−∫γ)``, ``b = ∫ exp(−∫_s γ)``
over the step, i.e. ``a = e^{−γτ}``, ``b = (1 − a)/γ`` for a constant γ and
``a = (t/(t+τ))³``, ``b = ((t+τ)⁴ − t⁴)/(4(t+τ)³)`` for ``γ = 3/t`` (``t`` the time since the
start or the last restart; finite at t = 0). Walls reflect: a coordinate folded back into the
box flips its velocity component (``ρ ∂_n S = 0``). Restart (``[time] restart = true``): at the
start of a step, when the particle estimate ``F̂ = Σ_i m (β log ρ̂_{g_i}(X_i) + V_{g_i}(X_i))``
exceeds the previous step's, S, P and the clock are reset, as in the FEM scheme.

Cost and MPI: every step gathers all particles on every rank (``allgather``; ``2 + 2d``
numbers per particle, and ``ρ̂`` once more) and each rank evaluates the kernel sums of all
particles of a vertex at its own particles twice (densities and regressions, then the
symmetric pressure): O(P_local · P_g) kernel evaluations per vertex and step (plus those at
the neighbours' particles for the jumps), memory in chunks of ``_CHUNK`` pairs. Meant for P up
to ~1e4.
"""

from __future__ import annotations

import math

import numpy as np

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.particles.sampler import ParticleProblem, ParticleSystem, reflect, sample_jumps
from rdgraph.problem.config import Settings

__all__ = [
    "DYNAMICS",
    "AcceleratedParticleSystem",
    "KernelDensity",
    "check_accelerated",
    "damping_coefficients",
    "log_mean_ratio",
    "log_mean_slope_elasticity",
    "scott_bandwidth",
]

#: ``--dynamics`` choices of ``rdgraph particles``: the gradient flow's Langevin diffusion with
#: jumps (the default) and the accelerated flow of this module.
DYNAMICS = ("langevin", "accelerated")
# Kernel evaluations held in memory at once (d·_CHUNK floats).
_CHUNK = 2_000_000
# Mirror images are made for particles within this many bandwidths of a wall: the Gaussian
# kernel is below e^{-32} ≈ 1e-14 of its peak beyond.
_IMAGE_REACH = 8.0
# Bandwidth floor as a fraction of the box width, for a vertex whose particles coincide.
_MIN_SPREAD = 1e-3
# Below this |y|, sinh(y)/y and its derivative by their series (first omitted term < 1e-18).
_SERIES_BELOW = 1e-3


def scott_bandwidth(points: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Scott's rule ``h_i = σ̂_i n^{−1/(d+4)}`` per direction (a diagonal bandwidth).

    Optimal in mean integrated squared error for Gaussian data. ``σ̂_i`` is floored at
    ``_MIN_SPREAD`` times the box width, so one particle (or coinciding ones) still has a
    kernel of finite height.

    Args:
        points: Positions, shape ``(d, n)``, ``n ≥ 1``.
        lower, upper: The box corners.
    """
    d, n = points.shape
    spread = points.std(axis=1, ddof=1) if n > 1 else np.zeros(d)
    spread = np.maximum(spread, _MIN_SPREAD * (upper - lower))
    return spread * n ** (-1.0 / (d + 4))


class KernelDensity:
    """A mass-weighted Gaussian kernel density estimate, mirrored at the walls of a box.

    ``ρ̂(x) = m Σ_j K_h(x − X_j)`` with ``K_h`` the product Gaussian of bandwidths ``h`` and ``m``
    the mass of one particle, so that ``ρ̂`` estimates a density of the PDE (integral = the
    vertex mass), not a probability density. Particles within ``_IMAGE_REACH`` bandwidths of a
    wall get mirror images behind it (a reflection-method estimate): without them the estimate
    is halved at the wall, and ``∇ log ρ̂`` would push particles out of the box. The mirrored
    values flip the sign of the velocity components normal to the wall (listed in ``odd``).

    Args:
        points: Positions ``(d, n)``, ``n ≥ 1``.
        mass: Mass per particle.
        lower, upper: The box corners.
        values: Values to regress, shape ``(k, n)`` (optional).
        odd: For each direction, the row of ``values`` that changes sign at its walls (or None).
    """

    def __init__(self, points: np.ndarray, mass: float, lower: np.ndarray, upper: np.ndarray,
                 values: np.ndarray | None = None, odd: list[int | None] | None = None):
        d = points.shape[0]
        self.h = scott_bandwidth(points, lower, upper)
        self.norm = mass / ((2 * math.pi) ** (d / 2) * float(np.prod(self.h)))
        values = np.zeros((0, points.shape[1])) if values is None else values
        pts, vals = points, values
        source = np.arange(points.shape[1])  # the original point behind each (image) point
        for i in range(d):
            reach = _IMAGE_REACH * self.h[i]
            # Images of the points (and of earlier directions' images: corners) near either wall.
            new_points, new_values, new_source = [pts], [vals], [source]
            for wall, near in ((lower[i], pts[i] - lower[i] < reach),
                               (upper[i], upper[i] - pts[i] < reach)):
                if not near.any():
                    continue
                image = pts[:, near].copy()
                image[i] = 2 * wall - image[i]
                image_values = vals[:, near].copy()
                if odd is not None and odd[i] is not None:
                    image_values[odd[i]] *= -1
                new_points.append(image)
                new_values.append(image_values)
                new_source.append(source[near])
            pts = np.concatenate(new_points, axis=1)
            vals = np.concatenate(new_values, axis=1)
            source = np.concatenate(new_source)
        self.points, self.values, self.source = pts, vals, source

    def evaluate(self, x: np.ndarray, *, gradient: bool = False,
                 weights: np.ndarray | None = None, value_gradient: bool = False) -> dict:
        """Kernel sums at points ``x`` (shape ``(d, m)``).

        Args:
            x: Points, shape ``(d, m)``.
            gradient: Also return ``∇ρ̂``.
            weights: Per particle weights ``w_j`` (``(n,)``, in the order of ``points``):
                also return ``m Σ_j w_j ∇K_h(x − X_j)`` (images carry their particle's weight).
            value_gradient: Also return the gradients of the regressions.

        Returns:
            ``density`` (m,); ``regression`` (k, m): ``Σ K v_j / Σ K``, 0 where the density
            underflows to 0 (no particle near x); if asked, ``gradient`` (d, m),
            ``weighted_gradient`` (d, m) and ``regression_gradient`` (k, d, m) (0 where the
            density underflows).
        """
        d, m = x.shape
        k = self.values.shape[0]
        gradient = gradient or weights is not None or value_gradient
        density = np.empty(m)
        weighted = np.empty((k, m))
        grad = np.empty((d, m)) if gradient else None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)[self.source]
            grad_weighted = np.empty((d, m))
        if value_gradient:
            grad_values = np.empty((k, d, m))
        scaled = self.points / self.h[:, None]
        step = max(1, _CHUNK // max(1, self.points.shape[1] * d * (1 + k * value_gradient)))
        for start in range(0, m, step):
            part = slice(start, min(m, start + step))
            z = x[:, part, None] / self.h[:, None, None] - scaled[:, None, :]  # (d, c, n)
            kernel = np.exp(-0.5 * np.einsum("icn,icn->cn", z, z))
            density[part] = kernel.sum(axis=1)
            weighted[:, part] = (kernel @ self.values.T).T
            if gradient:  # ∇_x K(x − X_j) = −K z / h
                grad[:, part] = -np.einsum("icn,cn->ic", z, kernel) / self.h[:, None]
            if weights is not None:
                grad_weighted[:, part] = -np.einsum("icn,cn->ic", z, kernel * w) / self.h[:, None]
            if value_gradient:
                grad_values[:, :, part] = -np.einsum("icn,cn,kn->kic", z, kernel,
                                                     self.values) / self.h[None, :, None]
        positive = density > 0
        safe = np.where(positive, density, 1.0)
        out = {"density": density * self.norm,
               "regression": np.where(positive, weighted / safe, 0.0)}
        if gradient:
            out["gradient"] = grad * self.norm
        if weights is not None:
            out["weighted_gradient"] = grad_weighted * self.norm
        if value_gradient:
            # ∇(A/D) = (∇A − (A/D) ∇D)/D with A = Σ K v, D = Σ K (the norms cancel).
            out["regression_gradient"] = np.where(
                positive, (grad_values - out["regression"][:, None, :] * grad[None]) / safe, 0.0)
        return out


def _sinhc(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sinh(y)/y`` and its derivative, by their series near 0."""
    small = np.abs(y) < _SERIES_BELOW
    safe = np.where(small, 1.0, y)
    y2 = y * y
    value = np.where(small, 1 + y2 / 6 + y2 * y2 / 120, np.sinh(safe) / safe)
    slope = np.where(small, y / 3 + y * y2 / 30,
                     (safe * np.cosh(safe) - np.sinh(safe)) / (safe * safe))
    return value, slope


def log_mean_ratio(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Λ(1, r)`` and ``∂_a Λ(a, b)`` at ``(1, r)`` (= at ``(ρ_g, ρ_h)``, being 0-homogeneous).

    ``Λ(a, b) = (a − b)/(log a − log b) = √(ab) sinhc(y)``, ``y = (log a − log b)/2``, so
    ``∂_a Λ = √(ab)/(2a) (sinhc(y) + sinhc'(y))``. Both are 0 at ``r = 0``.
    """
    r = np.asarray(r, dtype=np.float64)
    positive = r > 0
    safe = np.where(positive, r, 1.0)
    y = -0.5 * np.log(safe)
    value, slope = _sinhc(y)
    root = np.sqrt(safe)
    return (np.where(positive, root * value, 0.0),
            np.where(positive, 0.5 * root * (value + slope), 0.0))


def log_mean_slope_elasticity(r: np.ndarray) -> np.ndarray:
    """``r · d/dr ∂_a Λ(1, r)``: how the ∂θ factor changes with ``log r`` (0 at ``r = 0``).

    With ``f(r) = ∂_a Λ(1, r) = ½ √r u(y)``, ``u = sinhc + sinhc'``, ``y = −½ log r``:
    ``r f'(r) = ¼ √r (u − u')``, ``u' = sinhc' + sinhc''``.
    """
    r = np.asarray(r, dtype=np.float64)
    positive = r > 0
    safe = np.where(positive, r, 1.0)
    y = -0.5 * np.log(safe)
    value, slope = _sinhc(y)
    # sinhc'' by its series below |y| = 1e-2 (first omitted term y⁶/12960 < 1e-16).
    small = np.abs(y) < 1e-2
    ys = np.where(small, 1.0, y)
    y2 = y * y
    curvature = np.where(small, 1 / 3 + y2 / 10 + y2 * y2 / 168,
                         (ys * ys * np.sinh(ys) - 2 * ys * np.cosh(ys) + 2 * np.sinh(ys)) / ys**3)
    u, du = value + slope, slope + curvature
    return np.where(positive, 0.25 * np.sqrt(safe) * (u - du), 0.0)


def damping_coefficients(gamma: float | str, clock: float, tau: float) -> tuple[float, float]:
    """``a = exp(−∫γ)`` and ``b = ∫_t^{t+τ} exp(−∫_s^{t+τ} γ) ds`` over one step from ``clock``.

    ``P ← a P + b f`` is then exact for a force ``f`` frozen over the step.

    Args:
        gamma: A constant ``γ ≥ 0`` or ``"nesterov"`` (``γ = 3/t``).
        clock: Time since the start or the last restart.
        tau: The step.
    """
    if gamma == "nesterov":
        end = clock + tau
        return (clock / end) ** 3, (end**4 - clock**4) / (4 * end**3)
    gamma = float(gamma)
    if gamma * tau < 1e-12:
        return 1.0, tau
    a = math.exp(-gamma * tau)
    return a, -math.expm1(-gamma * tau) / gamma


class AcceleratedParticleSystem(ParticleSystem):
    """This rank's particles of the accelerated flow: ``x``, ``labels``, velocities ``p``, ``s``.

    The initial positions and vertices are drawn as for the Langevin sampler; velocities and S
    start at 0. Every particle carries the mass ``Σ_g ∫ρ0_g / P`` (P over all ranks).

    Args:
        problem: The particle problem (``laplacian``: log-mean mobility, or ``gibbs``).
        count: Particles on this rank.
        rng: This rank's random generator.
        damping: A constant ``γ ≥ 0`` or ``"nesterov"`` (``γ = 3/t``).
        restart: Function-value restart (reset S, P and the clock when ``F̂`` increases).
        comm: The communicator over which the particles are spread (collective steps).
    """

    def __init__(self, problem: ParticleProblem, count: int, rng: np.random.Generator, *,
                 damping: float | str = 0.0, restart: bool = False,
                 comm: MPI.Comm = MPI.COMM_WORLD):
        super().__init__(problem, count, rng)
        self.comm = comm
        self.damping = damping
        self.restart = restart
        self.total = comm.allreduce(count, op=MPI.SUM)
        self.mass = float(problem.initial_masses().sum()) / self.total
        self.p = np.zeros_like(self.x)
        self.s = np.zeros(self.count)
        self.clock = 0.0
        self.restarts = 0
        self.jumps = 0
        self.free_energy = math.nan  # F̂ of the state at the start of the last step
        self._edges = bool(problem.graph.edges)

    # -- estimates ------------------------------------------------------------------------------
    def _gather(self) -> np.ndarray:
        """All particles' ``(x, p, s, label)``, shape ``(2d + 2, P)``, on every rank."""
        local = np.vstack([self.x, self.p, self.s[None], self.labels[None].astype(np.float64)])
        if self.comm.size == 1:
            return local
        return np.concatenate(self.comm.allgather(local), axis=1)

    def estimates(self, *, pressure: bool = True) -> dict:
        """Kernel estimates at this rank's particles (collective).

        The pressure term ``β ∇log ρ̂_g`` is taken in the symmetric form of smoothed particle
        hydrodynamics, ``β Σ_j m (1/ρ̂_i + 1/ρ̂_j) ∇K_h(X_i − X_j)``: ``∇ρ̂/ρ̂`` plus
        ``Σ_j (m/ρ̂_j) ∇K``, which approximates ``∇ ∫ K = 0`` (O(h²)) but makes the pair
        forces antisymmetric. So the momentum of a vertex's particles changes only by
        ``∇V``, the walls, the exchange force and the jumps, and with a linear ``∇V`` and no
        edges their mean follows the mean ODE exactly, up to the time step. It costs a second
        kernel pass (every ``ρ̂_j`` is needed first).

        Args:
            pressure: Compute ``score`` (else only what :meth:`evaluate` gives).

        Returns:
            What :meth:`evaluate` returns at the particles, and ``score`` (d, P): the
            symmetric ``∇log ρ̂_g``.
        """
        everyone = self._gather()
        kdes = self.kernel_densities(everyone)
        out = self.evaluate(kdes, self.x, self.labels)
        if not pressure:
            return out
        # ρ̂_j of every particle (the gather keeps the rank order of _gather).
        rho = out["rho"] if self.comm.size == 1 else np.concatenate(
            self.comm.allgather(out["rho"]))
        labels = everyone[-1].astype(np.int64)
        out["score"] = np.zeros_like(self.x)
        for g, kde in kdes.items():
            own = np.flatnonzero(self.labels == g)
            if own.size == 0:
                continue
            sums = kde.evaluate(self.x[:, own], weights=1.0 / rho[labels == g])
            out["score"][:, own] = sums["gradient"] / out["rho"][own] + sums["weighted_gradient"]
        return out

    def kernel_densities(self, everyone: np.ndarray | None = None) -> dict[int, KernelDensity]:
        """One :class:`KernelDensity` per occupied vertex, regressing ``[S, P]`` if there are
        edges (collective unless ``everyone``, the output of the gather, is given)."""
        p = self.problem
        d = p.dim
        everyone = self._gather() if everyone is None else everyone
        labels = everyone[-1].astype(np.int64)
        values = everyone[d:2 * d + 1][[d] + list(range(d))] if self._edges else None
        odd = list(range(1, d + 1)) if self._edges else None  # rows of P in [S, P_0..]
        kdes = {}
        for g in np.unique(labels).tolist():  # the occupied vertices only
            mine = labels == g
            if mine.any():
                kdes[g] = KernelDensity(everyone[:d, mine], self.mass, p.lower, p.upper,
                                        values=values[:, mine] if values is not None else None,
                                        odd=odd)
        return kdes

    def evaluate(self, kdes: dict[int, KernelDensity], x: np.ndarray, labels: np.ndarray) -> dict:
        """The estimates at points ``x`` (``(d, m)``) with vertices ``labels`` (no MPI).

        Returns:
            ``rho``, ``grad_rho`` ((m,), (d, m)): ``ρ̂_g`` and ``∇ρ̂_g``, g the point's vertex.
            With edges also ``s_own``, ``grad_s_own``: ``Ŝ_g`` and its gradient, and for each
            slot j of the points' padded neighbour rows (:meth:`neighbour_slots`): ``rho_nb``,
            ``s_nb`` (m, D), ``grad_rho_nb``, ``grad_s_nb`` and ``p_nb`` (d, m, D).
        """
        d, m = x.shape
        targets, weights = self.neighbour_slots(labels)
        degree = targets.shape[1]
        out = {"rho": np.zeros(m), "grad_rho": np.zeros((d, m))}
        if self._edges:
            out.update({"s_own": np.zeros(m), "grad_s_own": np.zeros((d, m)),
                        "rho_nb": np.zeros((m, degree)), "s_nb": np.zeros((m, degree)),
                        "grad_rho_nb": np.zeros((d, m, degree)),
                        "grad_s_nb": np.zeros((d, m, degree)),
                        "p_nb": np.zeros((d, m, degree))})
            slots_all = targets, weights > 0
        for g, kde in kdes.items():
            # Points that need vertex g's estimate: its own, and with edges its neighbours'
            # (for the jump rates into g and the exchange term).
            own = labels == g
            if self._edges:
                slots = (slots_all[0] == g) & slots_all[1]
                need = own | slots.any(axis=1)
            else:
                need = own
            if not need.any():
                continue
            where = np.flatnonzero(need)
            sums = kde.evaluate(x[:, where], gradient=True, value_gradient=self._edges)
            own_here = own[where]
            mine = where[own_here]
            out["rho"][mine] = sums["density"][own_here]
            out["grad_rho"][:, mine] = sums["gradient"][:, own_here]
            if not self._edges:
                continue
            out["s_own"][mine] = sums["regression"][0, own_here]
            out["grad_s_own"][:, mine] = sums["regression_gradient"][0][:, own_here]
            rows, cols = np.nonzero(slots[where])
            target = where[rows]
            out["rho_nb"][target, cols] = sums["density"][rows]
            out["grad_rho_nb"][:, target, cols] = sums["gradient"][:, rows]
            out["s_nb"][target, cols] = sums["regression"][0, rows]
            out["grad_s_nb"][:, target, cols] = sums["regression_gradient"][0][:, rows]
            out["p_nb"][:, target, cols] = sums["regression"][1:, rows]
        return out

    def exchange(self, est: dict, x: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Jump rates, the ∂θ term of Ṡ and its gradient, at points ``x`` of vertices ``labels``.

        Returns:
            ``rates`` (m, D) to each neighbour slot, ``Q = ½ Σ_h ∂_{ρ_g}θ_gh (Ŝ_g − Ŝ_h)²``
            (m,) and ``∇Q`` (d, m) (the force ``−∇Q`` joins Ṗ).
        """
        p = self.problem
        targets, weights = self.neighbour_slots(labels)
        k = weights / p.beta  # w_gh/β, 0 on padding slots
        present = (est["rho_nb"] > 0) & (est["rho"][:, None] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(present, est["rho_nb"] / est["rho"][:, None], 0.0)
            # ∇log(ρ̂_h/ρ̂_g), (d, m, D)
            log_grad = np.where(present[None], est["grad_rho_nb"] / est["rho_nb"][None]
                                - (est["grad_rho"] / est["rho"])[:, :, None], 0.0)
        if p.coupling == "gibbs":
            here = p.potential(x, labels)
            grad_here = p.gradient(x, labels)
            shift = np.empty_like(ratio)
            grad_shift = np.empty_like(log_grad)
            for j in range(targets.shape[1]):
                shift[:, j] = (here - p.potential(x, targets[:, j])) / p.beta
                grad_shift[:, :, j] = (grad_here - p.gradient(x, targets[:, j])) / p.beta
            # θ_gh/ρ_g = (w/β) e^{δ/2} Λ(1, r e^{−δ}); clipped like the FEM's gibbs rates.
            shift = np.clip(shift, -1400.0, 1400.0)
            scale = k * np.exp(shift / 2)
            ratio = ratio * np.exp(-shift)
            log_grad = log_grad - grad_shift
        else:
            scale = k
            grad_shift = 0.0
        mobility, slope = log_mean_ratio(ratio)
        elasticity = log_mean_slope_elasticity(ratio)
        difference = est["s_nb"] - est["s_own"][:, None]  # Ŝ_h − Ŝ_g
        grad_difference = est["grad_s_nb"] - est["grad_s_own"][:, :, None]
        rates = scale * mobility * np.maximum(difference, 0.0)
        term = 0.5 * scale * slope * difference**2
        # ∇(½ c f(r') D²) = ½ c [(∇δ/2) f D² + r' f'(r') ∇log r' D² + 2 f D ∇D]
        grad_term = 0.5 * scale * ((grad_shift / 2 * slope + elasticity * log_grad)
                                   * difference**2 + 2 * slope * difference * grad_difference)
        return rates, term.sum(axis=1), grad_term.sum(axis=2)

    def diagnostics(self, est: dict | None = None) -> dict:
        """``F̂``, the kinetic energy ``Σ m |P|²/2`` and a finiteness flag, reduced (collective)."""
        est = est if est is not None else self.estimates(pressure=False)
        p = self.problem
        with np.errstate(divide="ignore"):
            local = np.array([
                self.mass * float(np.sum(p.beta * np.log(est["rho"])
                                         + p.potential(self.x, self.labels))),
                self.mass * 0.5 * float(np.sum(self.p * self.p)),
                0.0 if self.finite() and np.isfinite(self.p).all() else 1.0])
        free, kinetic, bad = self.comm.allreduce(local, op=MPI.SUM)
        return {"free_energy": free, "kinetic_energy": kinetic, "finite": bad == 0}

    # -- dynamics -------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """One symplectic-Euler step with exact damping, then the jumps (collective)."""
        p = self.problem
        est = self.estimates()
        previous = self.free_energy
        self.free_energy = self.diagnostics(est)["free_energy"]
        if self.restart and self.free_energy > previous:
            self.p[:] = 0.0
            self.s[:] = 0.0
            self.clock = 0.0
            self.restarts += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            log_rho = np.log(est["rho"])
            force = -p.gradient(self.x, self.labels) - p.beta * est["score"]
            potential = p.potential(self.x, self.labels)
        if self._edges:
            rates, extra, grad_extra = self.exchange(est, self.x, self.labels)
            force -= grad_extra
        else:
            rates, extra = None, 0.0
        a, b = damping_coefficients(self.damping, self.clock, dt)
        self.p = a * self.p + b * force
        self.s = a * self.s + b * (0.5 * np.sum(self.p * self.p, axis=0) - p.beta * log_rho
                                   - potential - extra)
        self.x += dt * self.p
        self._reflect()
        self.clock += dt
        if rates is not None:
            self._jump(rates, est, dt)

    def _reflect(self) -> None:
        """Fold positions into the box; a coordinate folded an odd number of times turns back."""
        p = self.problem
        folds = np.floor((self.x - p.lower[:, None]) / (p.upper - p.lower)[:, None])
        flip = np.mod(folds, 2) == 1
        reflect(self.x, p.lower, p.upper)
        self.p = np.where(flip, -self.p, self.p)

    def _jump(self, rates: np.ndarray, est: dict, dt: float) -> None:
        which, slot = sample_jumps(self.rng, rates, dt)
        if not which.size:
            return
        targets, _ = self.neighbour_slots(self.labels)  # the rows the rates were made for
        self.labels[which] = targets[which, slot]
        self.s[which] = est["s_nb"][which, slot]
        self.p[:, which] = est["p_nb"][:, which, slot]
        self.jumps += which.size


def check_accelerated(settings: Settings) -> None:
    """Refuse what the accelerated particles cannot run (before any MPI work).

    Raises:
        InputError: A coupling other than ``laplacian`` (log-mean) or ``gibbs``.
    """
    if settings.model.coupling not in ("laplacian", "gibbs"):
        raise InputError(f"--dynamics accelerated takes model.coupling = 'laplacian' (log-mean "
                         f"mobility) or 'gibbs', got {settings.model.coupling!r}")
