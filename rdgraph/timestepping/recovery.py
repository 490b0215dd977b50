"""Failed time steps: detect them collectively and retry with a halved ``dt``, for every scheme.

A step fails when its solve diverges (:class:`~rdgraph.errors.SolverError`, whose converged
reason is the same on every rank) or when the new state holds a NaN or inf (checked with a
global norm, so every rank sees the same answer). The step is then repeated from the saved
state and history as 2, 4, ... substeps of ``dt / 2``, ``dt / 4``, ..., up to ``max_retries``
halvings. The substep steppers come from :meth:`Stepper.with_dt`, are built only when first
needed and are kept for later steps; only the :class:`~rdgraph.timestepping.base.Stepper`
interface is used (``history``, ``restore``, ``history_after``, ``with_dt``, ``more_robust``).

Before any halving, a failed step of a solver that ``auto`` chose is retried with a more
robust linear solver
(:meth:`Stepper.more_robust`: ``spectral`` → ``vertex`` → ``direct`` where its memory fits),
which then stays for the rest of the run; each switch is printed and kept in
:attr:`RobustStepper.fallbacks` (``summary.json`` records them).
"""

from __future__ import annotations

import math
import sys

from rdgraph.compat import PETSc
from rdgraph.errors import SolverError
from rdgraph.timestepping.base import Stepper

__all__ = ["RobustStepper"]


def _finite(x: PETSc.Vec) -> bool:
    # The 1-norm propagates NaN and inf and is a global reduction: the same on every rank.
    return math.isfinite(x.norm(PETSc.NormType.NORM_1))


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def _sum_stats(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in {**a, **b}}


class RobustStepper:
    """A :class:`Stepper` whose failed steps are retried with halved time steps.

    Args:
        stepper: The stepper of the run.
        max_retries: How many times a failed step may be halved (0: fail at once).

    Attributes:
        retries: Steps that needed halving, over the run.
        fallbacks: The solver switches, ``{"step", "from", "to", "reason"}`` each.
        last_step_stats: The :meth:`Stepper.solver_stats` counts of the last accepted step
            alone (of the substeps when it was retried).
    """

    def __init__(self, stepper: Stepper, max_retries: int = 3):
        self.stepper = stepper
        self.max_retries = max_retries
        self._substeppers: dict[int, Stepper] = {}
        self._saved: PETSc.Vec | None = None
        self.retries = 0
        self.fallbacks: list[dict] = []
        self._retired: dict[str, int] = {}  # counts of the steppers replaced by fallbacks
        self.last_step_stats: dict[str, int] = {}

    def _substepper(self, level: int) -> Stepper:
        if level not in self._substeppers:
            self._substeppers[level] = self.stepper.with_dt(self.stepper.dt / 2**level)
        return self._substeppers[level]

    def _try(self, step, x: PETSc.Vec, t: float) -> tuple[int | None, str]:
        try:
            iterations = step(x, t)
        except SolverError as e:
            return None, str(e)
        if not _finite(x):
            return None, "the new state holds NaN or inf"
        return iterations, ""

    def step(self, x: PETSc.Vec, t: float, index: int) -> int:
        """Advance ``x`` from ``t`` by ``dt``; return the iterations of the accepted solves.

        Args:
            x: ρ^n, replaced by ρ^{n+1}.
            t: The time of ``x``.
            index: The step number n + 1, for messages.

        Raises:
            SolverError: Every attempt failed; ``x`` and the stepper's history are left as
                they were before the step (the last good state). Raised on every rank.
        """
        main = self.stepper
        if self._saved is None:
            self._saved = x.duplicate()
        x.copy(self._saved)
        before = main.history()
        counts = main.solver_stats()
        iterations, reason = self._try(main.step, x, t)
        while iterations is None and (robust := main.more_robust()) is not None:
            main, kind = self._switch(robust, index, reason, x)
            self._saved.copy(x)
            main.restore(x, before)
            counts = main.solver_stats()
            iterations, reason = self._try(main.step, x, t)
        if iterations is not None:
            self.last_step_stats = _difference(main.solver_stats(), counts)
            return iterations
        for level in range(1, self.max_retries + 1):
            self._saved.copy(x)
            sub = self._substepper(level)
            sub.restore(x, before)  # a multistep scheme restarts from ρ^n alone
            counts = sub.solver_stats()
            total = 0
            for k in range(2**level):
                its, why = self._try(sub.step, x, t + k * sub.dt)
                if its is None:
                    reason = f"{why} (with dt / {2**level})"
                    break
                total += its
            else:
                self.retries += 1
                self.last_step_stats = _difference(sub.solver_stats(), counts)
                main.restore(x, main.history_after(self._saved, sub.history()))
                return total
        self._saved.copy(x)
        main.restore(x, before)
        raise SolverError(
            f"step {index} (t = {t:.6g} -> {t + main.dt:.6g}) failed after "
            f"{self.max_retries} halvings of dt = {main.dt:g}: {reason}"
        )

    @property
    def setups(self) -> int:
        """Solver set-ups made: the stepper's (an adaptive stepper's rungs) and the substeps'."""
        return (getattr(self.stepper, "setups", 1) + len(self._substeppers)
                + len(self.fallbacks))

    def _switch(self, robust: tuple[Stepper, str], index: int, reason: str,
                x: PETSc.Vec) -> tuple[Stepper, str]:
        """Replace the stepper (and its substep steppers) by ``robust``; say so."""
        stepper, kind = robust
        before = self.stepper.solver_options.get("type", "?")
        self.fallbacks.append({"step": index, "from": before, "to": kind, "reason": reason})
        if x.getComm().tompi4py().rank == 0:
            print(f"rdgraph: warning: step {index}: {reason}; retrying with the {kind!r} "
                  f"solver instead of {before!r} for the rest of the run", file=sys.stderr,
                  flush=True)
        # The counts of the replaced steppers stay in the run's totals.
        self._retired = self.solver_stats()
        for sub in self._substeppers.values():
            sub.destroy()
        self._substeppers.clear()
        self.stepper.destroy()
        self.stepper = stepper
        return stepper, kind

    def solver_stats(self) -> dict[str, int]:
        """The counts of the stepper and of its substep steppers, summed."""
        total = _sum_stats(self._retired, self.stepper.solver_stats())
        for sub in self._substeppers.values():
            for key, value in sub.solver_stats().items():
                total[key] = total.get(key, 0) + value
        return total

    def destroy(self) -> None:
        for sub in self._substeppers.values():
            sub.destroy()
        self._substeppers.clear()
        if self._saved is not None:
            self._saved.destroy()
            self._saved = None
