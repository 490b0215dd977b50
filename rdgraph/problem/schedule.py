"""Temperature schedules: ``model.beta`` as a number, an expression in ``t`` or a table.

``beta = 0.1`` is a constant; ``beta = "0.5*exp(-t/20) + 0.02"`` an expression in ``t`` (read
by the safe parser of :mod:`rdgraph.problem.expressions`, never executed as Python);
``beta = [[0, 0.5], [50, 0.02]]`` a table of ``[t, β]`` points, interpolated geometrically
(linearly in ``log β``, so that a table of two points is an exponential decay) and constant
beyond its ends. Pure Python: the schedule is checked on every rank before any MPI work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rdgraph.errors import InputError
from rdgraph.problem.expressions import Expression, parse

__all__ = ["SCHEDULE_SAMPLES", "BetaSchedule"]

KEY = "model.beta"
#: Points of the uniform sample of ``[0, t_stop]`` on which a schedule must be positive and
#: finite (besides the table's own points): a schedule that dips below zero between samples
#: narrower than ``t_stop / SCHEDULE_SAMPLES`` is not caught.
SCHEDULE_SAMPLES = 10_001


class BetaSchedule:
    """β(t) of a run: a constant, an expression in ``t`` or a geometric table.

    Args:
        value: ``model.beta`` as read from the config: a number, an expression string or
            a list of ``[t, β]`` pairs.

    Raises:
        InputError: The value is none of these, the expression uses variables other than
            ``t``, or the table is empty, not strictly increasing in ``t``, or holds a β that
            is not a positive finite number.
    """

    def __init__(self, value: Any):
        self.value = value
        self.expression: Expression | None = None
        self.times = self.log_betas = None
        self.constant: float | None = None
        if isinstance(value, bool):
            raise InputError(f"{KEY} = {value!r}: expected a number, an expression in t or a "
                             "table of [t, beta] points")
        if isinstance(value, (int, float)):
            beta = float(value)
            if not math.isfinite(beta):
                raise InputError(f"{KEY} = {value!r}: must be finite")
            if beta <= 0:
                raise InputError(f"{KEY} = {value!r}: must be > 0")
            self.constant = beta
        elif isinstance(value, str):
            self.expression = parse(value, variables=("t",), gdim=1, what=KEY)
            if not self.expression.depends_on("t"):
                # "0.1" written as a string: a constant all the same.
                self.constant = self._evaluate_expression(np.zeros(1))[0]
                if not math.isfinite(self.constant) or self.constant <= 0:
                    raise InputError(f"{KEY} = {value!r}: must be > 0")
        elif isinstance(value, (list, tuple)):
            self._table(value)
        else:
            raise InputError(f"{KEY} = {value!r}: expected a number, an expression in t or a "
                             "table of [t, beta] points")

    def _table(self, value: list) -> None:
        if not value:
            raise InputError(f"{KEY} = []: a table needs at least one [t, beta] point")
        times, betas = [], []
        for point in value:
            if (not isinstance(point, (list, tuple)) or len(point) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in point)):
                raise InputError(f"{KEY}: table point {point!r} is not a pair [t, beta] of "
                                 "numbers")
            t, beta = float(point[0]), float(point[1])
            if not math.isfinite(t):
                raise InputError(f"{KEY}: table point {list(point)!r} has a time that is not "
                                 "finite")
            if not math.isfinite(beta) or beta <= 0:
                raise InputError(f"{KEY}: table point {list(point)!r}: beta must be a finite "
                                 "number > 0")
            times.append(t)
            betas.append(beta)
        steps = np.diff(times)
        if np.any(steps <= 0):
            i = int(np.flatnonzero(steps <= 0)[0])
            raise InputError(f"{KEY}: the table's times must increase strictly, but t = "
                             f"{times[i + 1]:g} follows t = {times[i]:g}")
        self.times = np.array(times)
        self.log_betas = np.log(betas)
        if len(set(betas)) == 1:
            self.constant = betas[0]

    @property
    def varies(self) -> bool:
        """β changes with ``t`` (an expression in ``t``, or a table of several values)."""
        return self.constant is None

    def _evaluate_expression(self, t: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            values = self.expression.evaluate(np.zeros((3, t.size)), t=t)
        return np.broadcast_to(np.asarray(values, dtype=np.float64), t.shape).copy()

    def values(self, t: np.ndarray) -> np.ndarray:
        """β at the times ``t`` (an array)."""
        t = np.asarray(t, dtype=np.float64)
        if self.constant is not None:
            return np.full(t.shape, self.constant)
        if self.expression is not None:
            return self._evaluate_expression(t)
        times, logs = self.times, self.log_betas
        betas = np.exp(logs)
        # Segment i holds [times[i], times[i+1]); before the first point and from the last
        # on, β is the end's value.
        i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, max(0, times.size - 2))
        if times.size == 1:
            return np.full(t.shape, betas[0])
        w = np.clip((t - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
        out = np.exp((1.0 - w) * logs[i] + w * logs[i + 1])
        # The given values exactly at the points and on flat segments (not exp(log β)): a
        # constant stretch reproduces a run at that constant β to the last bit.
        given = np.array([float(p[1]) for p in self.value], dtype=np.float64)
        out = np.where(w == 0.0, given[i], out)
        out = np.where(w == 1.0, given[i + 1], out)
        return np.where(given[i] == given[i + 1], given[i], out)

    def __call__(self, t: float) -> float:
        """β at time ``t``."""
        if self.constant is not None:
            return self.constant
        return float(self.values(np.array([float(t)]))[0])

    def check(self, t_stop: float, key: str) -> tuple[float, float]:
        """Refuse a schedule that is not positive and finite on ``[0, t_stop]``.

        Checked on :data:`SCHEDULE_SAMPLES` uniform points and the table's points inside.

        Args:
            t_stop: The latest time of the run.
            key: The setting ``t_stop`` comes from, for the message.

        Returns:
            The smallest and the largest β on the sample.

        Raises:
            InputError: β is NaN, infinite, zero or negative somewhere on the sample.
        """
        samples = np.linspace(0.0, t_stop, SCHEDULE_SAMPLES)
        if self.times is not None:
            inside = self.times[(self.times > 0) & (self.times < t_stop)]
            samples = np.sort(np.concatenate([samples, inside]))
        betas = self.values(samples)
        bad = ~(np.isfinite(betas) & (betas > 0))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{KEY} = {self.value!r} is {betas[i]:.4g} at t = {samples[i]:.6g}: "
                             f"beta must be a positive finite number on all of [0, {key}] = "
                             f"[0, {t_stop:g}]")
        return float(betas.min()), float(betas.max())

    def describe(self) -> float | str | list[list[float]]:
        """The schedule as given (a number, the expression text, or the table)."""
        if self.expression is not None:
            return str(self.expression)
        if self.times is not None:
            pairs = zip(self.times, self.log_betas, strict=True)
            return [[float(t), float(math.exp(b))] for t, b in pairs]
        return self.constant
