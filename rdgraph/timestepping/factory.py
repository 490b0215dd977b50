"""The one place that maps ``[time] scheme`` (and the upwind coupling) to a stepper class."""

from __future__ import annotations

from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.problem.config import Scheme, Settings
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.timestepping.accelerated import AcceleratedStepper
from rdgraph.timestepping.adaptive import AdaptiveStepper
from rdgraph.timestepping.base import Stepper
from rdgraph.timestepping.jko import JKOStepper
from rdgraph.timestepping.linear import TimeStepper
from rdgraph.timestepping.recovery import RobustStepper
from rdgraph.timestepping.upwind import UpwindStepper

__all__ = ["make_stepper"]


def make_stepper(model: Model, operators: BlockOperators, settings: Settings,
                 solver_overrides: dict | None = None) -> tuple[Stepper, RobustStepper]:
    """The stepper of the settings' scheme, and the retry loop around it.

    * ``accelerated``: :class:`AcceleratedStepper` (its own state (log ρ, S) and SNES);
    * ``jko``: :class:`JKOStepper`;
    * ``implicit-euler`` with ``coupling = "upwind"``: :class:`UpwindStepper`;
    * ``implicit-euler``, ``crank-nicolson``, ``bdf2``: :class:`TimeStepper`.

    Each class checks what it needs beyond the config's checks (a P1 space, a positive
    initial density) and raises :class:`~rdgraph.errors.InputError` on every rank.

    Args:
        model: Forms and potentials.
        operators: The assembled block operators.
        settings: Validated settings.
        solver_overrides: Command-line PETSc options (without the ``rd_`` prefix).

    With ``[time] adaptive = true`` the stepper is an :class:`AdaptiveStepper` around the
    scheme's.

    Returns:
        The stepper, and the :class:`RobustStepper` that retries its failed steps
        (``solver.max_retries`` halvings of ``dt``).
    """
    scheme = settings.time.method
    stepper: Stepper
    if scheme is Scheme.ACCELERATED:
        stepper = AcceleratedStepper(model, settings, solver_overrides)
    elif scheme is Scheme.JKO or model.coupling == "upwind":
        cls = JKOStepper if scheme is Scheme.JKO else UpwindStepper
        stepper = cls(model, operators, scheme, settings.time.dt, settings.solver,
                      solver_overrides)
    else:
        # A temperature schedule is the linear schemes' alone (the config checks refuse it
        # for the others).
        stepper = TimeStepper(model, operators, scheme, settings.time.dt, settings.solver,
                              solver_overrides, BetaSchedule(settings.model.beta))
    time = settings.time
    if time.adaptive:
        # Failed solves are rejected steps of the controller: no halvings around it.
        stepper = AdaptiveStepper(stepper, dt_min=time.dt_min, dt_max=time.dt_max,
                                  tolerance=time.tolerance, t_stop=settings.t_stop)
        return stepper, RobustStepper(stepper, 0)
    return stepper, RobustStepper(stepper, settings.solver.max_retries)
