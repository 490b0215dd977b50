"""Failed time steps: detect them collectively and retry with a halved ``dt``.

A step fails when its linear solve diverges (:class:`~rdgraph.errors.SolverError`, whose
converged reason is the same on every rank) or when the new state holds a NaN or inf (checked
with a global norm, so every rank sees the same answer). The step is then repeated from the
saved state as 2, 4, ... substeps of ``dt / 2``, ``dt / 4``, ..., up to ``max_retries``
halvings; the substep steppers are built only when first needed and kept for later steps.
"""

from __future__ import annotations

import math

from rdgraph.compat import PETSc
from rdgraph.errors import SolverError
from rdgraph.timestepping.linear import TimeStepper

__all__ = ["RobustStepper"]


def _finite(x: PETSc.Vec) -> bool:
    # The 1-norm propagates NaN and inf and is a global reduction: the same on every rank.
    return math.isfinite(x.norm(PETSc.NormType.NORM_1))


class RobustStepper:
    """A :class:`TimeStepper` whose failed steps are retried with halved time steps.

    Args:
        stepper: The stepper of the run (``dt``, scheme and solver options are taken from it).
        max_retries: How many times a failed step may be halved (0: fail at once).
    """

    def __init__(self, stepper: TimeStepper, max_retries: int = 3):
        self.stepper = stepper
        self.max_retries = max_retries
        self._substeppers: dict[int, TimeStepper] = {}
        self._saved = None
        self._saved_previous = None
        self.retries = 0  # steps that needed halving, over the run

    def _substepper(self, level: int) -> TimeStepper:
        if level not in self._substeppers:
            s = self.stepper
            # type(s): the JKO stepper has the same constructor and retries the same way.
            self._substeppers[level] = type(s)(
                s.model, s._operators, s.scheme, s.dt / 2**level, s._solver_settings,
                s._overrides,
            )
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
        """Advance ``x`` from ``t`` by ``dt``; return the Krylov iterations of all solves.

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
        previous = main._previous
        if previous is not None:
            if self._saved_previous is None:
                self._saved_previous = previous.duplicate()
            previous.copy(self._saved_previous)
        iterations, reason = self._try(main.step, x, t)
        if iterations is not None:
            return iterations
        for level in range(1, self.max_retries + 1):
            self._restore(x, previous)
            sub = self._substepper(level)
            if sub._previous is not None:  # multistep schemes restart from ρ^n alone
                sub._previous.destroy()
                sub._previous = None
            dt, total = sub.dt, 0
            for k in range(2**level):
                its, why = self._try(sub.step, x, t + k * dt)
                if its is None:
                    reason = f"{why} (with dt / {2**level})"
                    break
                total += its
            else:
                self.retries += 1
                if main.scheme == "bdf2":
                    # The next full BDF2 step needs ρ^n, one full dt back.
                    if main._previous is None:
                        main._previous = self._saved.copy()
                    else:
                        self._saved.copy(main._previous)
                main.steps_taken += 1
                return total
        self._restore(x, previous)
        raise SolverError(
            f"step {index} (t = {t:.6g} -> {t + main.dt:.6g}) failed after "
            f"{self.max_retries} halvings of dt = {main.dt:g}: {reason}"
        )

    def _restore(self, x: PETSc.Vec, previous: PETSc.Vec | None) -> None:
        self._saved.copy(x)
        if previous is not None:
            self._saved_previous.copy(previous)
        current = self.stepper._previous
        if current is not None and current is not previous:
            current.destroy()  # made by a failed BDF2 start step
        self.stepper._previous = previous

    def destroy(self) -> None:
        for sub in self._substeppers.values():
            sub.destroy()
        for v in (self._saved, self._saved_previous):
            if v is not None:
                v.destroy()
