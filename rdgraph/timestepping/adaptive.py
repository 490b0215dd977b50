"""Adaptive time steps: step doubling, a PI controller, and solver set-ups on a step ladder.

Each step from ρ^n tries a step ``h`` twice with the run's one-step scheme of order ``p``:
once whole (``y_h``) and as two halves (``y_{h/2}``). Their difference estimates the local
error of the halves (Richardson): ``e = (y_{h/2} − y_h) / (2^p − 1)``, measured in the
root-mean-square mixed norm ``|e_i| / (tol + tol·max(|ρ^n_i|, |y_i|))`` over every dof of
every vertex. A step with ``err ≤ 1`` is accepted, with local extrapolation
``y_{h/2} + e`` (order p + 1) for the linear schemes; a step with ``err > 1`` (or a failed
solve) is redone smaller. That is not an error: only a step rejected at ``dt_min`` is.

The next step comes from Gustafsson's PI controller (Hairer–Wanner II, §IV.8)::

    h_{n+1} = h_n · min(f_max, max(f_min, 0.9 err_n^{-0.7/(p+1)} (err_{n-1}/err_n)^{0.4/(p+1)}))

rounded down to the ladder ``dt · 2^k`` within ``[dt_min, dt_max]``. Every rung's stepper
(a factorization, an AMG hierarchy, a spectral set-up) is built once, when first needed, and
kept: a run makes as many set-ups as rungs it visits (plus one for a final step shortened to
end at ``t_end`` exactly), not one per change of step.

The controller's state (the proposed step, the previous error, the counts) is the stepper's
:class:`~rdgraph.timestepping.base.History`, so checkpoints keep it and a resumed run takes
the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import math

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import SolverError
from rdgraph.problem.config import Scheme
from rdgraph.timestepping.base import History, Stepper

__all__ = ["AdaptiveStepper", "scheme_order"]

# Bounds of the step ratio per step (Hairer–Wanner's facmin, facmax) and the safety factor.
F_MIN, F_MAX, SAFETY = 0.2, 5.0, 0.9
# Hairer–Wanner's PI exponents, divided by p + 1.
ALPHA, BETA = 0.7, 0.4


def scheme_order(scheme: Scheme) -> int:
    """The order of a one-step scheme."""
    return 2 if scheme is Scheme.CRANK_NICOLSON else 1


class AdaptiveStepper(Stepper):
    """One accepted adaptive step per :meth:`step`, with its rejected attempts inside.

    Args:
        base: The run's stepper, of the first step ``dt`` (rung 0 of the ladder).
        dt_min: The smallest step.
        dt_max: The largest step.
        tolerance: The local error allowed per step.
        t_stop: The time the run ends at: the last step is shortened to end there exactly.

    Attributes:
        dt: The step proposed for the next attempt.
        last_dt: The last accepted step (0 before the first).
        time_after: The time reached by the last accepted step.
        accepted: Accepted steps over the run (a resumed run continues the count).
        rejected: Rejected attempts over the run.
        setups: Steppers (solver set-ups) this object built, the base included.
    """

    def __init__(self, base: Stepper, *, dt_min: float, dt_max: float, tolerance: float,
                 t_stop: float):
        if base.scheme.multistep or base.scheme is Scheme.ACCELERATED:
            raise ValueError(f"adaptive steps need a one-step scheme, not {base.scheme}")
        self.base = base
        self.scheme = base.scheme
        self.order = scheme_order(base.scheme)
        self.extrapolate = base.scheme.linear
        self.dt0 = base.dt
        self.dt = base.dt
        self.dt_min, self.dt_max = dt_min, dt_max
        self.tolerance = tolerance
        self.t_stop = t_stop
        self.extra_columns = (*base.extra_columns, "dt")
        # Rungs k of the ladder dt0·2^k allowed for the whole step.
        self._kmin = math.ceil(math.log2(dt_min / self.dt0) - 1e-9)
        self._kmax = math.floor(math.log2(dt_max / self.dt0) + 1e-9)
        self._rungs: dict[int, Stepper] = {0: base}
        self._odd: dict[float, Stepper] = {}  # steps off the ladder (the last one)
        self.last_dt = 0.0
        self.time_after = 0.0
        self.error_previous = 0.0  # 0: no accepted step yet (the controller is then I only)
        self.rejected_last = False
        self.accepted = 0
        self.rejected = 0
        self.steps_taken = 0
        self._start: PETSc.Vec | None = None
        self._whole: PETSc.Vec | None = None

    # -- the ladder ---------------------------------------------------------------------

    def _rung(self, k: int) -> Stepper:
        if k not in self._rungs:
            self._rungs[k] = self.base.with_dt(self.dt0 * 2.0**k)
        return self._rungs[k]

    def _off_ladder(self, h: float) -> Stepper:
        if h not in self._odd:
            self._odd[h] = self.base.with_dt(h)
        return self._odd[h]

    def _attempt(self, t: float) -> tuple[float, Stepper, Stepper, bool]:
        """The step to try from ``t`` (the proposal rounded down to the ladder, or what is
        left to ``t_stop``), its whole and half steppers, and whether it is at ``dt_min``."""
        k = math.floor(math.log2(self.dt / self.dt0) + 1e-9)
        k = min(self._kmax, max(self._kmin, k))
        h = self.dt0 * 2.0**k
        left = self.t_stop - t
        if left <= h * (1 + 1e-9):
            # The last step: exactly to t_stop (a step a hair longer than a rung is the rung's).
            if math.isclose(left, h, rel_tol=1e-9):
                return h, self._rung(k), self._rung(k - 1), k <= self._kmin
            return left, self._off_ladder(left), self._off_ladder(left / 2), left <= self.dt_min
        return h, self._rung(k), self._rung(k - 1), k <= self._kmin

    @property
    def setups(self) -> int:
        """Solver set-ups of every stepper built, the base included (a stepper under a
        temperature schedule may have made several)."""
        return sum(getattr(stepper, "setups", 1)
                   for stepper in (*self._rungs.values(), *self._odd.values()))

    # -- the step -----------------------------------------------------------------------

    def _error(self, start: PETSc.Vec, halves: PETSc.Vec, whole: PETSc.Vec) -> float:
        a, y, w = start.array_r, halves.array_r, whole.array_r
        scale = self.tolerance * (1.0 + np.maximum(np.abs(a), np.abs(y)))
        local = np.array([np.sum(((y - w) / (2**self.order - 1) / scale) ** 2)])
        total = np.empty_like(local)
        start.comm.tompi4py().Allreduce(local, total, op=MPI.SUM)
        return math.sqrt(total[0] / max(1, start.getSize()))

    def step(self, x: PETSc.Vec, t: float) -> int:
        """Replace ``x`` = ρ^n at ``t`` by the accepted ρ^{n+1}; return the Krylov or Newton
        iterations of every attempt.

        Raises:
            SolverError: A step at ``dt_min`` was rejected (on every rank); ``x`` is ρ^n.
        """
        if self._start is None:
            self._start, self._whole = x.duplicate(), x.duplicate()
        x.copy(self._start)
        iterations = 0
        p = self.order
        while True:
            h, whole, half, at_min = self._attempt(t)
            for stepper in (whole, half):
                # The first Krylov guess of a step may not depend on earlier steps: a resumed
                # run must repeat the uninterrupted one bit for bit.
                forget = getattr(stepper, "forget_guess", None)
                if forget is not None:
                    forget()
            reason = ""
            try:
                self._start.copy(self._whole)
                iterations += whole.step(self._whole, t)
                self._start.copy(x)
                iterations += half.step(x, t)
                iterations += half.step(x, t + h / 2)
            except SolverError as e:
                error, reason = math.inf, str(e)
            else:
                error = self._error(self._start, x, self._whole)
                if not math.isfinite(error):
                    reason = "the new state holds NaN or inf"
            if error <= 1.0:
                break
            self.rejected += 1
            self.rejected_last = True
            if at_min:
                self._start.copy(x)
                why = reason or f"estimated error {error:.3g} times the tolerance"
                raise SolverError(f"adaptive step at t = {t:.6g} rejected at time.dt_min = "
                                  f"{self.dt_min:g} (step {h:.6g}): {why}")
            shrink = F_MIN if not math.isfinite(error) else max(
                F_MIN, SAFETY * error ** (-1.0 / (p + 1)))
            self.dt = h * min(shrink, 0.5)  # at least one rung down
        if self.extrapolate:
            # y_{h/2} + (y_{h/2} − y_h) / (2^p − 1): Richardson, one order more.
            x.axpy(1.0 / (2**p - 1), self._difference(x))
        error = max(error, 1e-10)
        if self.error_previous > 0:
            factor = (SAFETY * error ** (-ALPHA / (p + 1))
                      * (self.error_previous / error) ** (BETA / (p + 1)))
        else:
            factor = SAFETY * error ** (-1.0 / (p + 1))
        factor = min(F_MAX, max(F_MIN, factor))
        if self.rejected_last:
            factor = min(factor, 1.0)  # no growth right after a rejection
        if h in self._odd:
            pass  # the shortened last step: the proposal stays (for a run resumed further)
        else:
            self.dt = min(self.dt_max, h * factor)
        self.error_previous = error
        self.rejected_last = False
        self.last_dt = h
        self.time_after = self.t_stop if math.isclose(t + h, self.t_stop, rel_tol=1e-12) \
            else t + h
        self.accepted += 1
        self.steps_taken += 1
        return iterations

    def _difference(self, halves: PETSc.Vec) -> PETSc.Vec:
        # y_{h/2} − y_h, in the work vector of the whole step.
        self._whole.aypx(-1.0, halves)
        return self._whole

    # -- the Stepper interface ------------------------------------------------------------

    def with_dt(self, dt: float) -> AdaptiveStepper:
        return AdaptiveStepper(self.base.with_dt(dt), dt_min=self.dt_min, dt_max=self.dt_max,
                               tolerance=self.tolerance, t_stop=self.t_stop)

    def history(self) -> History:
        return History(self.dt, values={
            "adaptive_dt": self.dt, "adaptive_error": self.error_previous,
            "adaptive_last_dt": self.last_dt,
            "adaptive_rejected_last": float(self.rejected_last),
            "adaptive_accepted": float(self.accepted), "adaptive_rejected": float(self.rejected),
        })

    def restore(self, x: PETSc.Vec, history: History) -> None:
        values = history.values
        if "adaptive_dt" not in values:
            return
        self.dt = values["adaptive_dt"]
        self.error_previous = values["adaptive_error"]
        self.last_dt = values["adaptive_last_dt"]
        self.rejected_last = bool(values["adaptive_rejected_last"])
        self.accepted = int(values["adaptive_accepted"])
        self.rejected = int(values["adaptive_rejected"])

    def extra_diagnostics(self, stats: dict[str, int]) -> list:
        return [*self.base.extra_diagnostics(stats), self.last_dt]

    def solver_stats(self) -> dict[str, int]:
        total: dict[str, int] = {"steps": self.steps_taken}
        for stepper in (*self._rungs.values(), *self._odd.values()):
            for key, value in stepper.solver_stats().items():
                if key != "steps":
                    total[key] = total.get(key, 0) + value
        total["accepted_steps"] = self.accepted
        total["rejected_steps"] = self.rejected
        return total

    @property
    def solver_options(self) -> dict:
        return self.base.solver_options

    def destroy(self) -> None:
        for stepper in (*self._rungs.values(), *self._odd.values()):
            stepper.destroy()
        self._rungs.clear()
        self._odd.clear()
        for vec in (self._start, self._whole):
            if vec is not None:
                vec.destroy()
        self._start = self._whole = None
