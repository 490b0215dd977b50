"""PETSc helpers shared by every solver: the options prefix, options held in PETSc's
database for one set-up or solve only, and readable names of PETSc's reasons.

The bottom of the solver layer: the block, spectral, precision and Newton solvers import it,
and it imports none of them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rdgraph.compat import PETSc

__all__ = ["OPTIONS_PREFIX", "configure_ksp", "direct_package", "options_in_database",
           "reason_name"]

#: The options prefix of rdgraph's solvers: ``-rd_ksp_monitor`` on the command line.
OPTIONS_PREFIX = "rd_"


def direct_package() -> str:
    """The sparse LU package: MUMPS if PETSc has it, else SuperLU_DIST, else PETSc's own."""
    # MUMPS is in the wheel and in the official images; fall back to PETSc's own LU.
    for package in ("mumps", "superlu_dist"):
        if PETSc.Sys.hasExternalPackage(package):
            return package
    return "petsc"


def _option_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None or value == "" else str(value)


@contextlib.contextmanager
def options_in_database(options: dict, prefix: str):
    """``options`` under ``prefix`` in PETSc's global database for the ``with`` block only.

    PETSc reads some options only when a preconditioner is set up (those of multigrid levels,
    ``mg_levels_*``, of a factorization, ``mat_mumps_*``, and of fieldsplit blocks), which for
    a SNES happens inside a solve: callers hold them around ``setFromOptions`` and around
    each solve. Afterwards every name has its previous value again (a command-line option
    stays), so solvers alive at the same time, and later simulations in the same process,
    never see each other's options.
    """
    database = PETSc.Options()
    names = [f"{prefix}{key}" for key in options]
    previous = {name: database.getString(name) for name in names if database.hasName(name)}
    for name, value in zip(names, options.values(), strict=True):
        database.setValue(name, _option_value(value))
    try:
        yield
    finally:
        for name in names:
            if name in previous:
                database.setValue(name, _option_value(previous[name]))
            else:
                database.delValue(name)


def configure_ksp(ksp: PETSc.KSP, options: dict, prefix: str, *, set_up: bool = False) -> None:
    """Apply ``options`` to ``ksp`` under ``prefix``, leaving the global database as found.

    With ``set_up`` the KSP (its operators set) is set up while ``options`` are in the
    database (see :func:`options_in_database`); without, options read only at set-up are lost.
    """
    ksp.setOptionsPrefix(prefix)
    with options_in_database(options, prefix):
        ksp.setFromOptions()
        if set_up:
            ksp.setUp()


def reason_name(enum, value: int) -> str:
    """The name of a PETSc enum value, e.g. ``reason_name(PETSc.KSP.ConvergedReason, -3)``."""
    names = {v: k for k, v in vars(enum).items() if k.isupper()}
    return names.get(value, str(value))
