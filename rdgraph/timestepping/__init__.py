"""Time stepping: one :class:`Stepper` interface, one factory, one retry loop for every scheme.

``linear`` (implicit Euler, Crank–Nicolson, BDF2), ``jko``, ``upwind`` and ``accelerated``
implement :class:`~rdgraph.timestepping.base.Stepper`; :func:`make_stepper` picks one from the
settings; :class:`RobustStepper` retries a failed step of any of them with halved steps.
"""

from rdgraph.timestepping.base import History, Stepper
from rdgraph.timestepping.factory import make_stepper
from rdgraph.timestepping.recovery import RobustStepper

__all__ = ["History", "RobustStepper", "Stepper", "make_stepper"]
