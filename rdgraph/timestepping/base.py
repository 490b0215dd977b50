"""The one interface of every time stepper, and what a stepper carries from step to step.

A :class:`Stepper` advances the block vector ``x`` = ρ^n at time ``t`` by its fixed step
``dt``. What else its next step needs (ρ^{n-1} for BDF2; the momentum S, log ρ and the damping
clock of the accelerated flow) is its :class:`History`: :meth:`Stepper.history` returns a copy
of it, :meth:`Stepper.restore` puts one back. Retries of failed steps
(:mod:`rdgraph.timestepping.recovery`) and checkpoints (:mod:`rdgraph.output.checkpoint`)
use nothing else, so they serve every scheme alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from rdgraph.compat import PETSc
from rdgraph.problem.config import Scheme

__all__ = ["MASS_ROUNDING_LIMIT", "History", "Stepper", "is_mass_rounding"]

#: Largest relative defect of the total mass after a step that the steppers put back as
#: rounding. Rounding in the operator's column sums and solver tolerances stay far below it;
#: a larger defect is a fault (a non-conservative operator, a loose solver tolerance) and is
#: left in the solution, where the diagnostics' mass column shows it.
MASS_ROUNDING_LIMIT = 1e-8


def is_mass_rounding(target: float, mass: float) -> bool:
    """Whether ``mass`` differs from ``target`` by no more than :data:`MASS_ROUNDING_LIMIT`."""
    return abs(mass - target) <= MASS_ROUNDING_LIMIT * abs(target)


@dataclass
class History:
    """What a stepper carries from one step to the next besides ρ^n.

    Attributes:
        dt: The step the history was made with: a multistep scheme discards a history of
            another step (it then restarts with a one-step scheme).
        vectors: Arrays of the owned dofs in the block layout of the state (``(N·n,)``:
            vertex-major), e.g. ``{"previous": ρ^{n-1}}``. Checkpoints store them by dof
            coordinates, so they resume on any number of ranks.
        values: Numbers, e.g. ``{"clock": 1.5}``.
    """

    dt: float
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.vectors or self.values)


class Stepper(ABC):
    """Advances ρ^n by one step of a fixed ``dt`` of one scheme.

    Attributes:
        scheme: The scheme.
        dt: The fixed time step.
        steps_taken: Steps taken by this object.
        extra_columns: Names of the scheme's own ``diagnostics.csv`` columns (after the
            common ones), whose values :meth:`extra_diagnostics` gives.
    """

    scheme: Scheme
    dt: float
    steps_taken: int = 0
    extra_columns: tuple[str, ...] = ()

    @abstractmethod
    def step(self, x: PETSc.Vec, t: float) -> int:
        """Replace ``x`` = ρ^n at time ``t`` by ρ^{n+1}; return the (Krylov or Newton)
        iterations for the diagnostics.

        Raises:
            SolverError: The solve failed, on every rank. ``x`` and the history are then
                undefined: the caller restores them (see :meth:`history`).
        """

    @abstractmethod
    def with_dt(self, dt: float) -> Stepper:
        """A new stepper of the same problem, scheme and solver options with step ``dt``,
        without history (its first step is a start step). The caller destroys it."""

    def more_robust(self) -> tuple[Stepper, str] | None:
        """A new stepper of the same problem, scheme and ``dt`` with a more robust linear
        solver, and that solver's name; ``None`` if there is none (the default). Collective.
        The caller destroys it."""
        return None

    def history(self) -> History:
        """A copy of what the next step needs besides ρ^n (collective-free)."""
        return History(self.dt)

    def restore(self, x: PETSc.Vec, history: History) -> None:  # noqa: B027 - one-step default
        """Continue from ρ^n = ``x`` with ``history`` (from :meth:`history` of this or a
        stepper of the same scheme, or from a checkpoint). Collective.

        The default, for one-step schemes, keeps nothing: ``x`` is the whole state."""

    def history_after(self, start: PETSc.Vec, substeps: History) -> History:
        """The history after a step from ρ^n = ``start`` that substeps of another ``dt``
        took for this stepper, when they ended with history ``substeps``."""
        return substeps

    def extra_diagnostics(self, stats: dict[str, int]) -> list:
        """The values of :attr:`extra_columns` for the current state (collective).

        Args:
            stats: The :meth:`solver_stats` counts of the last step alone.
        """
        return []

    def solver_stats(self) -> dict[str, int]:
        """Counts since construction: ``steps``, ``nonlinear_iterations``,
        ``linear_iterations`` (and scheme-specific ones), like Irksome's ``solver_stats``."""
        return {"steps": self.steps_taken}

    @property
    def solver_options(self) -> dict:
        """The PETSc options of the solver (for ``summary.json``)."""
        return {}

    @abstractmethod
    def destroy(self) -> None:
        """Free the PETSc objects (collective)."""
