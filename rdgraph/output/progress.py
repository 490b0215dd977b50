"""Progress reporting during a run: a live bar on a terminal, plain log lines otherwise.

Only rank 0 prints. On a terminal (``stream.isatty()``) one line is redrawn in place at most
every ``min_interval`` seconds. In a batch log (redirected output, Slurm, and also under
``mpiexec``, which hands rank 0 a pipe) a complete line is written every ``num_steps //
lines`` steps, and in between whenever ``log_interval`` seconds have passed since the last
line, so that a long run never goes silent in its log and a short one stays short.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rdgraph.output.diagnostics import Diagnostics

__all__ = ["SETUP_LOGGER", "Progress", "SetupProgress", "format_duration"]

#: The logger that set-up steps report long loops to (rank 0's records are printed).
SETUP_LOGGER = "rdgraph.setup"

_BAR_WIDTH = 30


def format_duration(seconds: float) -> str:
    """``75`` → ``"1:15"``, ``3725`` → ``"1:02:05"``; ``"?"`` for an unknown duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """An observer for :meth:`rdgraph.Simulation.run` that reports the time stepping.

    Each report shows the step, t, the relative mass drift ``|m(t) − m(t₀)| / |m(t₀)|``
    (t₀ the first step observed), the free energy, the Krylov iterations of the last step
    and the estimated time to the end.

    Args:
        num_steps: The step the run ends at.
        rank: This process's rank; only rank 0 prints.
        quiet: Print nothing.
        stream: Where to print (default ``sys.stdout``).
        interactive: Force the bar (True) or log lines (False); default ``stream.isatty()``.
        lines: Log lines per run in non-interactive mode.
        log_interval: Seconds after which a log line is written even between the
            ``lines`` marks.
        min_interval: Seconds between redraws of the bar.
        clock: The time source (for tests).
        t_end: Measure progress by the time ``d.t`` reached out of ``t_end`` instead of by
            steps (adaptive runs).
    """

    def __init__(
        self,
        num_steps: int,
        *,
        rank: int = 0,
        quiet: bool = False,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        lines: int = 10,
        log_interval: float = 60.0,
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
        t_end: float | None = None,
    ):
        self.num_steps = max(1, num_steps)
        # Adaptive runs: progress is measured in time (their number of steps is unknown).
        self.t_end = t_end
        self._t0 = 0.0
        self._lines = max(1, lines)
        self._next_mark = 1
        self.enabled = rank == 0 and not quiet
        self.stream = stream if stream is not None else sys.stdout
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.every = max(1, self.num_steps // max(1, lines))
        self.log_interval = log_interval
        self.min_interval = min_interval
        self._clock = clock
        self._first_step: int | None = None
        self._mass0 = 1.0
        self._start = 0.0
        self._last_output = -math.inf
        self._width = 0
        self._open_line = False

    def drift(self, d: Diagnostics) -> float:
        """Relative mass drift of ``d`` against the first step observed."""
        scale = abs(self._mass0) if self._mass0 else 1.0
        return abs(d.mass - self._mass0) / scale

    def eta(self, step: int, now: float | None = None) -> float:
        """Seconds left, extrapolated from the time per step so far (NaN before a step)."""
        if self._first_step is None or step <= self._first_step:
            return math.nan
        now = self._clock() if now is None else now
        return (now - self._start) / (step - self._first_step) * (self.num_steps - step)

    def _fraction(self, d: Diagnostics) -> float:
        if self.t_end is None:
            return d.step / self.num_steps
        return min(1.0, d.t / self.t_end)

    def _time_eta(self, d: Diagnostics) -> float:
        if d.t <= self._t0:
            return math.nan
        return (self._clock() - self._start) / (d.t - self._t0) * (self.t_end - d.t)

    def line(self, d: Diagnostics) -> str:
        """The text of one report."""
        if self.t_end is not None:
            return (f"step {d.step:>6d}  t = {d.t:<10.6g}/{self.t_end:g} "
                    f"drift = {self.drift(d):.2e}  F = {d.free_energy:.6g}  "
                    f"its = {d.ksp_iterations}  eta {format_duration(self._time_eta(d))}")
        return (f"step {d.step:>6d}/{self.num_steps}  t = {d.t:<10.6g} "
                f"drift = {self.drift(d):.2e}  F = {d.free_energy:.6g}  "
                f"its = {d.ksp_iterations}  eta {format_duration(self.eta(d.step))}")

    def __call__(self, d: Diagnostics) -> None:
        if self._first_step is None:
            # The first call is the initial state (step 0, or a resumed run's checkpoint).
            self._first_step, self._mass0, self._t0 = d.step, d.mass, d.t
            if self.t_end is not None:
                self._next_mark = int(self._fraction(d) * self._lines) + 1
            self._start = self._last_output = self._clock()
            return
        if not self.enabled:
            return
        fraction = self._fraction(d)
        last = fraction >= 1.0
        now = self._clock()
        mark = d.step % self.every == 0
        if self.t_end is not None:
            mark = fraction * self._lines >= self._next_mark
            if mark:
                self._next_mark = int(fraction * self._lines) + 1
        if self.interactive:
            if not last and now - self._last_output < self.min_interval:
                return
            filled = int(_BAR_WIDTH * fraction)
            text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {self.line(d)}"
            # Blank out the rest of a longer previous line.
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad + ("\n" if last else ""))
            self._open_line = not last
        elif last or mark or now - self._last_output >= self.log_interval:
            self.stream.write("  " + self.line(d) + "\n")
        else:
            return
        self._last_output = now
        self.stream.flush()

    def close(self) -> None:
        """End a bar left open by a run that stopped early, so that messages start a line."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


class SetupProgress:
    """Reports the phases of a set-up once it has taken more than ``after`` seconds.

    A small problem sets up in a second and prints nothing; a large one (thousands of
    vertices, a large factorization) says what it is doing instead of going silent.
    Only rank 0 prints, one complete line per phase. Use it as a context manager, so that
    a set-up that raises does not leave its handler on the ``rdgraph.setup`` logger (every
    later set-up in the process would print through it)::

        with SetupProgress(rank=comm.rank) as progress:
            progress.phase("mesh")
            ...
            progress.done()

    Args:
        rank: This process's rank.
        quiet: Print nothing.
        after: Seconds of set-up after which phases are reported.
        stream: Where to print (default ``sys.stdout``).
        clock: The time source (for tests).
    """

    def __init__(self, *, rank: int = 0, quiet: bool = False, after: float = 3.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
        self.enabled = rank == 0 and not quiet
        self.after = after
        self.stream = stream
        self._clock = clock
        self._start = clock()
        self._phase: str | None = None
        self._phase_start = self._start
        self.printed = 0
        # Long loops inside a phase (factorizations, per-vertex assembly) report to the
        # ``rdgraph.setup`` logger: printed here, as the phases are, until ``done``.
        self._handler: logging.Handler | None = None
        if self.enabled:
            self._handler = _Forward(self)
            logger = logging.getLogger(SETUP_LOGGER)
            logger.addHandler(self._handler)
            logger.setLevel(logging.INFO)

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(f"rdgraph: set-up {format_duration(self._clock() - self._start)} {text}\n")
        stream.flush()
        self.printed += 1

    def phase(self, what: str) -> None:
        """The previous phase is over and ``what`` begins."""
        now = self._clock()
        if self.enabled and now - self._start >= self.after:
            if self._phase is not None and now - self._phase_start >= 1.0:
                self._write(f"{self._phase}: done in {now - self._phase_start:.1f} s")
            self._write(f"{what} ...")
        self._phase, self._phase_start = what, now

    def done(self) -> None:
        """The set-up is over."""
        self.phase("time stepping")
        self.close()

    def close(self) -> None:
        """Stop printing the ``rdgraph.setup`` records (idempotent; :meth:`done` calls it)."""
        if self._handler is not None:
            logging.getLogger(SETUP_LOGGER).removeHandler(self._handler)
            self._handler = None

    def __enter__(self) -> SetupProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Forward(logging.Handler):
    """Prints the ``rdgraph.setup`` log records as set-up lines."""

    def __init__(self, progress: SetupProgress):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress._write(record.getMessage())
