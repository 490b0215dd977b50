"""Block solvers for ``a (I ⊗ M) + b A``, configured through PETSc options under a prefix.

Types (``[solver] type``):

* ``direct``: MUMPS LU of the assembled monolithic matrix.
* ``krylov``: a PETSc KSP/PC of your choice on the assembled monolithic matrix.
* ``fieldsplit``: GMRES with PETSc ``fieldsplit`` over vertices (one split per vertex).
* ``spectral``: the graph-spectral (Kronecker) solver of :mod:`rdgraph.solvers.spectral`,
  matrix-free: exact when the vertex operators are equal (laplacian coupling, potential
  independent of ``g``), otherwise a preconditioner for GMRES on the true operator.
* ``vertex``: FGMRES preconditioned by the exact vertex blocks (block Jacobi over vertices,
  :mod:`rdgraph.solvers.vertex`): robust to vertex operators that differ strongly.
* ``auto`` (the default): ``direct`` up to ``AUTO_DIRECT_MAX`` unknowns in all and
  ``AUTO_DIRECT_MAX_VERTICES`` vertices, where one factorization is cheap and exact; above,
  ``vertex`` where the potentials of neighbouring vertices differ by more than
  ``AUTO_SPREAD_MAX`` β somewhere (the spectral solver's mean operator is then far from
  every vertex's), else ``spectral``.

The spectral solver's N scalar problems are either dealt to the ranks, each factorized and
solved whole and serially (``[solver] scalar_layout = "per-rank"``, what ``auto`` does for
factorized scalar solves on more than one rank), or each solved on all ranks
(``"distributed"``).

Option precedence, lowest first: rdgraph's defaults, ``[solver]`` in the config (including its
``petsc_options`` table), then command-line options. The block solve uses the prefix ``rd_``,
the spectral scalar solves ``rd_spectral_``, fieldsplit's splits ``rd_fieldsplit_v<g>_``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.blocks import BlockLayout
from rdgraph.errors import SolverError
from rdgraph.problem.config import SolverSettings
from rdgraph.solvers.petsc import (
    OPTIONS_PREFIX,
    configure_ksp,
    direct_package,
    options_in_database,
    reason_name,
)
from rdgraph.solvers.precision import (
    condition_estimate,
    factorization_precision,
    mumps_single_precision_on,
)
from rdgraph.solvers.spectral import SpectralPreconditioner, factorization_count, modal_transform
from rdgraph.solvers.vertex import VertexBlockPreconditioner, potential_spread

__all__ = ["AUTO_DIRECT_MAX_VERTICES", "OPTIONS_PREFIX", "BlockSolver", "LinearSolver",
           "ReusedSetupSolver", "configure_ksp", "direct_package", "fgmres_options",
           "krylov_restart",
           "more_robust_type", "options_in_database",
           "reason_name", "resolve_solver", "solver_options", "spectral_per_rank"]

SPECTRAL_PREFIX = "spectral_"
# The outer FGMRES of a solve preconditioned by the set-up of another β (``-rd_reused_*``).
REUSED_PREFIX = "reused_"
VERTEX_PREFIX = "vertex_"
# Scalar problems up to this many global dofs are factorized once; larger ones use AMG.
# When the spectral solve is exact the factorizations are the whole solve, and pay off on
# larger meshes than when they only precondition, as do serial factorizations of whole
# problems (one rank, or modes dealt to ranks): the smaller limit is for distributed ones.
LU_MAX_DOFS = 60_000
LU_MAX_DOFS_EXACT = 300_000
# Fill-in of a 3-D factorization grows like n^{4/3} (2-D: n log n), so 3-D meshes factorize
# only much smaller problems ... (the measurements behind these constants:
# docs/notes/solver-constants.md)
LU_3D_DIVISOR = 8
# ... unless there are no more factorizations than ranks (modes that only precondition, close
# shifts; dealing the modes may still split a cluster over two ranks): a rank's modes are then
# about one batched solve, faster than a V-cycle each, up to a size where the set-up grows
# faster than the gain.
LU_3D_SHARED_MAX_DOFS = 120_000
# ... and only while the N factorizations take at most this fraction of the machine's memory.
LU_MEMORY_FRACTION = 0.25
# GAMG drops graph edges weaker than this when it aggregates the scalar mode problems
# (PETSc's default keeps them all): fewer outer and per-mode iterations in 2-D and 3-D.
SPECTRAL_GAMG_THRESHOLD = 0.01
# ... and smooths each level with one sweep of (processor-local) symmetric SOR instead of
# PETSc's default two Chebyshev/Jacobi iterations: as many iterations, a few % faster.
SPECTRAL_AMG_SMOOTHER = {"mg_levels_ksp_type": "richardson", "mg_levels_pc_type": "sor",
                         "mg_levels_ksp_max_it": 1}
# ``auto`` factorizes the whole block system up to this many unknowns ...
AUTO_DIRECT_MAX = 100_000
# ... and this many vertices: the graph couples the blocks like extra dimensions, and the
# fill-in grows with them (docs/notes/graphs-large-n.md).
AUTO_DIRECT_MAX_VERTICES = 64
# ``auto`` takes the vertex-block solver over the spectral one when the potentials of two
# neighbouring vertices differ by more than this many β at some node: the spectral solver's
# mean vertex operator is then far from every vertex's (on the default toy, 28β apart, it
# does not converge).
AUTO_SPREAD_MAX = 3.0
# The retry order of a failed linear solve (``[solver] fallback``): each type is followed by
# the more robust one, ``direct`` last (where its memory estimate fits).
MORE_ROBUST = {"spectral": "vertex", "krylov": "vertex", "fieldsplit": "vertex",
               "vertex": "direct"}
# FGMRES keeps two vectors per iteration up to its restart: at most this many bytes of them
# per rank, but a restart of at least KRYLOV_MIN_RESTART.
KRYLOV_BYTES = 2**30
KRYLOV_MIN_RESTART = 10
# Bytes per unknown of a monolithic MUMPS factorization of the block system, 2-D P1
# (measured at 256²); 3-D more.
DIRECT_BYTES_PER_UNKNOWN_2D = 4_000.0


def krylov_restart(local_unknowns: int) -> int:
    """FGMRES's restart: 100, or fewer where its 2 vectors per iteration would exceed
    :data:`KRYLOV_BYTES` on a rank (H(6, 5) × 32², 2 ranks: 68 MB per vector and rank)."""
    fits = int(KRYLOV_BYTES // (2 * 8 * max(local_unknowns, 1)))
    return max(KRYLOV_MIN_RESTART, min(100, fits))


def fgmres_options(settings: SolverSettings, layout: BlockLayout) -> dict:
    """The outer FGMRES on the block operator of ``layout``: the ``[solver]`` tolerances and
    iteration limit, and a restart bounded by :func:`krylov_restart` of its local unknowns."""
    restart = krylov_restart(layout.num_blocks * layout.size_local)
    return {"ksp_type": "fgmres", "ksp_rtol": settings.rtol, "ksp_atol": settings.atol,
            "ksp_max_it": settings.max_it, "ksp_gmres_restart": restart}


def _lu() -> dict:
    return {"ksp_type": "preonly", "pc_type": "lu",
            "pc_factor_mat_solver_type": direct_package()}


def _serial_lu(tdim: int) -> dict:
    """LU of a whole scalar problem on one process.

    In 2-D PETSc's own LU (nested dissection) factorizes as fast as MUMPS and solves about
    three times faster; in 3-D its row-by-row factorization falls far behind MUMPS.
    """
    return {**_lu(), "pc_factor_mat_solver_type": "petsc" if tdim <= 2 else direct_package()}


def _whole_if_factorized(layout: str, num_ranks: int) -> bool:
    """Factorized scalar problems are whole on one process: on one rank, or dealt to ranks."""
    return num_ranks == 1 or layout != "distributed"


def spectral_per_rank(layout: str, inner: str, num_ranks: int) -> bool:
    """Whether the spectral modes are dealt to the ranks (``[solver] scalar_layout``).

    ``auto`` deals them for factorized scalar solves: a parallel factorization of one scalar
    problem gains little over a serial one, so N serial factorizations side by side are about
    ``num_ranks`` times faster.
    """
    if num_ranks == 1 or layout == "distributed":
        return False
    return layout == "per-rank" or inner == "lu"


def _physical_memory() -> float:
    """Bytes of memory of this machine (node), or infinity where unknown."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def factorization_bytes(size_global: int, tdim: int = 2) -> float:
    """Rough memory of one LU factorization of a P1-like scalar problem.

    2-D nested dissection fills in like ``n log n``: about ``5 n log2 n`` entries of 12 bytes;
    3-D fill grows like ``n^{4/3}``: about ``160 n^{4/3}`` bytes (both fitted to measured
    factorizations).
    """
    if tdim >= 3:
        return 160.0 * size_global ** (4.0 / 3.0)
    return 12.0 * 5.0 * size_global * math.log2(max(size_global, 2))


def resolve_solver(settings: SolverSettings, num_blocks: int, size_global: int,
                   exact: bool, tdim: int = 2, num_ranks: int = 1,
                   factorizations: int | None = None,
                   spread: float = 0.0) -> tuple[str, str | None]:
    """The block solver type and spectral inner solver that ``settings`` resolve to.

    Args:
        settings: The ``[solver]`` settings (``type`` and ``inner`` may be ``auto``).
        num_blocks: Graph vertices.
        size_global: Scalar dofs per vertex.
        exact: The spectral solve is exact (laplacian coupling, equal vertex operators).
        tdim: Topological dimension of the mesh (3-D factorizations fill in much more).
        num_ranks: MPI ranks of the run.
        factorizations: Scalar factorizations a factorized spectral solve would keep
            (:func:`rdgraph.solvers.spectral.factorization_count`); ``None``: one per vertex.
        spread: How far the vertex operators differ
            (:func:`rdgraph.solvers.vertex.potential_spread`).

    Returns:
        ``(type, inner)``; ``inner`` is ``"lu"`` or ``"amg"`` for ``spectral``, else ``None``.
    """
    kind = settings.type
    if kind == "auto":
        if num_blocks * size_global <= AUTO_DIRECT_MAX and num_blocks <= AUTO_DIRECT_MAX_VERTICES:
            kind = "direct"
        elif not exact and spread > AUTO_SPREAD_MAX:
            kind = "vertex"
        else:
            kind = "spectral"
    if kind == "vertex":
        inner = settings.inner
        if inner == "auto":
            limit = LU_MAX_DOFS_EXACT if tdim <= 2 else LU_MAX_DOFS_EXACT // LU_3D_DIVISOR
            needed = num_blocks * factorization_bytes(size_global, tdim)
            affordable = needed <= LU_MEMORY_FRACTION * _physical_memory()
            inner = "lu" if size_global <= limit and affordable else "amg"
        return kind, inner
    if kind != "spectral":
        return kind, None
    inner = settings.inner
    if inner == "auto":
        # Whole scalar problems (one rank, or modes dealt to ranks) factorize and solve
        # serially, which beats AMG also where the factorization only preconditions.
        whole = _whole_if_factorized(settings.scalar_layout, num_ranks)
        limit = LU_MAX_DOFS_EXACT if exact or whole else LU_MAX_DOFS
        count = num_blocks if factorizations is None else factorizations
        if tdim >= 3:
            shared = whole and not exact and count <= num_ranks
            limit = LU_3D_SHARED_MAX_DOFS if shared else limit // LU_3D_DIVISOR
        # Keep all factorizations in a quarter of the machine's memory, with the dense
        # blocks of the batched solves (right-hand sides and solutions, at most N in all).
        needed = count * factorization_bytes(size_global, tdim) + 16.0 * num_blocks * size_global
        affordable = needed <= LU_MEMORY_FRACTION * _physical_memory()
        inner = "lu" if size_global <= limit and affordable else "amg"
    return kind, inner


def more_robust_type(kind: str, num_blocks: int, size_global: int, tdim: int = 2,
                     memory: float | None = None) -> str | None:
    """The solver type that a failed solve of type ``kind`` is retried with, or ``None``.

    ``spectral`` (and ``krylov``, ``fieldsplit``) give way to ``vertex``, ``vertex`` to
    ``direct`` where the monolithic factorization's estimated memory
    (:data:`DIRECT_BYTES_PER_UNKNOWN_2D` per unknown, 4× that in 3-D) fits in half of
    ``memory`` (default: this machine's).
    """
    fallback = MORE_ROBUST.get(kind)
    if fallback != "direct":
        return fallback
    memory = _physical_memory() if memory is None else memory
    per_unknown = DIRECT_BYTES_PER_UNKNOWN_2D * (4.0 if tdim >= 3 else 1.0)
    return "direct" if per_unknown * num_blocks * size_global <= 0.5 * memory else None


def solver_options(settings: SolverSettings, overrides: dict[str, Any] | None = None) -> dict:
    """The PETSc options (without prefix) of the outer block solve."""
    if settings.type == "direct":
        options: dict[str, Any] = _lu()
    else:
        options = {
            "ksp_type": settings.ksp_type,
            "pc_type": settings.pc_type,
            "ksp_rtol": settings.rtol,
            "ksp_atol": settings.atol,
            "ksp_max_it": settings.max_it,
        }
        if settings.pc_type == "bjacobi":
            options["sub_pc_type"] = "ilu"
    options.update(settings.petsc_options)
    options.update(overrides or {})
    return options


class LinearSolver:
    """A KSP for one fixed matrix, set up once and applied every step.

    Args:
        A: The system matrix (kept fixed: ``dt`` is fixed).
        options: PETSc options without the prefix.
        prefix: The options prefix, identical on every rank.
        name: What is being solved, for error messages.
    """

    def __init__(self, A: PETSc.Mat, options: dict, *, prefix: str = OPTIONS_PREFIX, name: str):
        ksp = PETSc.KSP().create(A.getComm())
        ksp.setOperators(A)
        configure_ksp(ksp, options, prefix, set_up=True)
        self.name, self.ksp = name, ksp

    @classmethod
    def from_ksp(cls, ksp: PETSc.KSP, name: str) -> LinearSolver:
        """Wrap a KSP that is already configured and set up."""
        solver = cls.__new__(cls)
        solver.name, solver.ksp = name, ksp
        return solver

    def solve(self, b: PETSc.Vec, x: PETSc.Vec) -> int:
        """Solve ``A x = b`` (x is the initial guess); return the iteration count.

        Raises:
            SolverError: The solve did not converge.
        """
        try:
            self.ksp.solve(b, x)
        except PETSc.Error as error:
            # A Python preconditioner's SolverError reaches us wrapped in a PETSc error.
            if isinstance(error.__cause__, SolverError):
                raise SolverError(f"{self.name}: {error.__cause__}") from error.__cause__
            raise
        reason = self.ksp.getConvergedReason()
        if reason < 0:
            raise SolverError(
                f"{self.name}: the linear solve diverged "
                f"({reason_name(PETSc.KSP.ConvergedReason, reason)}"
                f"{self._pc_failure()}, {self.ksp.getIterationNumber()} iterations)"
            )
        return self.ksp.getIterationNumber()

    def _pc_failure(self) -> str:
        """Why the preconditioner failed, e.g. a factorization out of memory, or ''."""
        failed = self.ksp.getPC().getFailedReason()
        if failed == PETSc.PC.FailedReason.NOERROR:
            return ""
        text = f": {reason_name(PETSc.PC.FailedReason, failed)}"
        if failed == PETSc.PC.FailedReason.FACTOR_OUTMEMORY:
            text += " (the factorization needs more memory: try [solver] type = \"spectral\")"
        return text

    def destroy(self) -> None:
        self.ksp.destroy()


class BlockSolver:
    """The solver of ``a (I ⊗ M) + b A`` chosen by ``[solver] type``.

    Args:
        operators: The block operators (:class:`rdgraph.discretization.operators.BlockOperators`).
        mass_coefficient: ``a``.
        operator_coefficient: ``b``.
        settings: The ``[solver]`` settings.
        overrides: Command-line PETSc options (without the ``rd_`` prefix).
        name: What is being solved, for error messages.
    """

    def __init__(self, operators, mass_coefficient: float, operator_coefficient: float,
                 settings: SolverSettings, overrides: dict | None = None, *, name: str):
        overrides = dict(overrides or {})
        inner_overrides = {k[len(SPECTRAL_PREFIX):]: overrides.pop(k)
                           for k in list(overrides) if k.startswith(SPECTRAL_PREFIX)}
        vertex_overrides = {k[len(VERTEX_PREFIX):]: overrides.pop(k)
                            for k in list(overrides) if k.startswith(VERTEX_PREFIX)}
        a, b = mass_coefficient, operator_coefficient
        # The graph's modal transforms (O(N + E) to build, whatever the graph): exact ones,
        # or a surrogate / per-vertex shifts on large graphs.
        self.transform = (modal_transform(operators)
                          if settings.type in ("auto", "spectral") else None)
        # The spectral transform is the whole solve (no outer Krylov method) when exact.
        self.exact = exact = operators.modes_decouple and (
            self.transform is None or self.transform.exact)
        factorizations = None
        if self.transform is not None and settings.inner == "auto":
            factorizations = factorization_count(
                self.transform.values, a, b, operators.same_stiffness and self.transform.exact)
        #: max |V_g − V_h| / β over edges and nodes (what ``auto`` judges the spread by).
        self.spread = potential_spread(operators) if settings.type == "auto" else None
        self.kind, inner = resolve_solver(
            settings, operators.layout.num_blocks, operators.layout.size_global, exact,
            operators.model.mesh.topology.dim, operators.layout.comm.size, factorizations,
            spread=self.spread or 0.0)
        if settings.type == "auto" and self.kind == "direct":
            settings = dataclasses.replace(settings, type="direct")
        if inner is not None:
            settings = dataclasses.replace(settings, inner=inner)
        self.name = name
        self.matrix = None
        self.preconditioner = None
        self.vertex_preconditioner = None
        if self.kind in ("direct", "krylov"):
            self.matrix = operators.matrix(a, b)
            self._solver = LinearSolver(self.matrix, solver_options(settings, overrides),
                                        name=name)
        elif self.kind == "fieldsplit":
            self.matrix = operators.matrix(a, b)
            self._solver = self._fieldsplit(operators, settings, overrides)
        elif self.kind == "vertex":
            self._solver = self._vertex(operators, a, b, settings, overrides, vertex_overrides)
        else:
            self._solver = self._spectral(operators, a, b, settings, overrides, inner_overrides)
        # Krylov solves start from the caller's x (a prediction of the solution) when it is
        # better than zero; the convergence test stays relative to |b|, so only the work
        # changes.
        ksp = self._solver.ksp
        self._krylov_guess = ksp.getType() != PETSc.KSP.Type.PREONLY
        # Where the test is on the true residual (right preconditioning, and the exact
        # spectral solve iterated per mode, which has no outer Krylov), solve instead for the
        # correction to the guess, from the residual b − A x that judging the guess computes
        # anyway, to the same absolute tolerance: PETSc would compute that residual again.
        pc = self.preconditioner
        self._corrects_guess = (
            (pc is not None and self.exact and pc.block_tolerances is not None)
            or (self._krylov_guess and ksp.getPCSide() == PETSc.PC.Side.RIGHT
                and ksp.getNormType() == PETSc.KSP.NormType.UNPRECONDITIONED))
        ksp.setInitialGuessNonzero(self._krylov_guess and not self._corrects_guess)
        #: ``solve`` starts from its ``x`` (when that beats zero): worth predicting it.
        self.takes_initial_guess = self._krylov_guess or self._corrects_guess
        self._residual = self._correction = None
        self.options = self._describe(settings, operators)

    def _describe(self, settings, operators) -> dict:
        described = {"type": self.kind, "ksp_type": self._solver.ksp.getType(),
                     "pc_type": self._solver.ksp.getPC().getType()}
        if operators.coupling == "gibbs" and operators.chain is not None:
            described["gibbs_coupling"] = "constant rates"
        elif operators.coupling == "gibbs" and operators.rate_vectors is None:
            described["gibbs_coupling"] = ("quadrature" if operators.quadrature_coupling
                                           else "per-edge")
        if self.vertex_preconditioner is not None:
            described["inner"] = settings.inner
        if self.spread is not None:
            described["potential_spread"] = round(self.spread, 3)
        if self.preconditioner is not None:
            described["inner"] = settings.inner
            described["scalar_layout"] = ("per-rank" if self.preconditioner.per_rank
                                          else "distributed")
            if self.factorization_precision is not None:
                # Of the MUMPS factorizations: PETSc's own LU is double whatever was asked.
                mumps = operators.layout.comm.allreduce(
                    self.preconditioner.mumps_factorizations, op=MPI.SUM)
                described["factorization_precision"] = (self.factorization_precision if mumps
                                                        else "double")
        return described

    def _fieldsplit(self, operators, settings, overrides) -> LinearSolver:
        options = {"ksp_type": "gmres", "ksp_rtol": settings.rtol, "ksp_atol": settings.atol,
                   "ksp_max_it": settings.max_it, "pc_type": "fieldsplit",
                   "pc_fieldsplit_type": "multiplicative"}
        options.update(settings.petsc_options)
        options.update(overrides)
        ksp = PETSc.KSP().create(self.matrix.getComm())
        ksp.setOperators(self.matrix)
        pc = ksp.getPC()
        pc.setType("fieldsplit")
        layout = operators.layout
        start, n = layout.local_range[0], layout.size_local
        for g in range(layout.num_blocks):
            index = PETSc.IS().createStride(n, start + g * n, 1, comm=layout.comm)
            pc.setFieldSplitIS((f"v{g}", index))
        configure_ksp(ksp, options, OPTIONS_PREFIX, set_up=True)
        limit = LU_MAX_DOFS
        if operators.model.mesh.topology.dim >= 3:
            limit //= LU_3D_DIVISOR  # as for the spectral solver's scalar solves
        inner = {"ksp_type": "preonly", "pc_type": "lu" if layout.size_global <= limit
                 else "gamg"}
        if inner["pc_type"] == "lu":
            inner["pc_factor_mat_solver_type"] = direct_package()
        for g, sub in enumerate(pc.getFieldSplitSubKSP()):
            # The user's options of this block (fieldsplit_v<g>_*) win over the defaults.
            split = f"fieldsplit_v{g}_"
            mine = {k[len(split):]: v for k, v in options.items() if k.startswith(split)}
            configure_ksp(sub, {**inner, **mine}, OPTIONS_PREFIX + split, set_up=True)
        return LinearSolver.from_ksp(ksp, self.name)

    def _spectral(self, operators, a, b, settings, overrides, inner_overrides) -> LinearSolver:
        exact = self.exact
        inner_kind = settings.inner  # resolved by resolve_solver
        comm = operators.layout.comm
        per_rank = spectral_per_rank(settings.scalar_layout, inner_kind, comm.size)
        if inner_kind == "lu":
            # Whole scalar problems (one rank, or dealt to the ranks) factorize serially.
            whole = _whole_if_factorized(settings.scalar_layout, comm.size)
            inner = _serial_lu(operators.model.mesh.topology.dim) if whole else _lu()
        elif exact:
            # The scalar solves are the whole solve: iterate them until the block residual
            # meets the tolerance. FGMRES preconditions on the right, so it measures the true
            # residual, and keeps the preconditioned directions: GMRES on the right would
            # spend one more V-cycle per solve rebuilding the solution from them.
            inner = {"ksp_type": "fgmres", "pc_type": "gamg", "ksp_max_it": settings.max_it,
                     "pc_gamg_threshold": SPECTRAL_GAMG_THRESHOLD, **SPECTRAL_AMG_SMOOTHER}
        else:
            inner = {"ksp_type": "preonly", "pc_type": "gamg",  # one V-cycle per mode
                     "pc_gamg_threshold": SPECTRAL_GAMG_THRESHOLD, **SPECTRAL_AMG_SMOOTHER}
        inner.update(inner_overrides)
        self.factorization_precision = None
        if inner_kind == "lu":
            self.factorization_precision = self._factorization_precision(
                operators, a, b, settings, inner_overrides)
        if exact:
            outer = {"ksp_type": "preonly"}
        else:
            # FGMRES: right preconditioning, so the stopping test is on the true residual
            # and each iteration applies the preconditioner once (GMRES on the left also
            # applies it to the initial residual), and the solve can be for the correction
            # to a guess (``BlockSolver.solve``).
            outer = fgmres_options(settings, operators.layout)
        outer.update(settings.petsc_options)
        outer.update(overrides)
        self.matrix = operators.shell(a, b)
        self.preconditioner = SpectralPreconditioner(
            operators, a, b, inner, OPTIONS_PREFIX + SPECTRAL_PREFIX, per_rank,
            block_tolerances=((settings.rtol, settings.atol)
                              if exact and inner.get("ksp_type") != "preonly" else None),
            # Modes sharing a factorization are solved at once: MUMPS's batched solve wins
            # there, unless a package was asked for.
            batched_package=("mumps" if inner_kind == "lu" and direct_package() == "mumps"
                             and "pc_factor_mat_solver_type" not in inner_overrides else None),
            single_precision=(self.factorization_precision == "single"
                              and "pc_precision" not in inner_overrides),
            transform=self.transform)
        return self._preconditioned(self.preconditioner, outer)

    def _vertex(self, operators, a, b, settings, overrides, inner_overrides) -> LinearSolver:
        """FGMRES on the matrix-free operator, preconditioned by the exact vertex blocks."""
        if settings.inner == "lu":
            # Every block is whole on one process (one rank, or the blocks dealt to ranks).
            inner = _serial_lu(operators.model.mesh.topology.dim)
        else:
            inner = {"ksp_type": "preonly", "pc_type": "gamg",  # one V-cycle per block
                     "pc_gamg_threshold": SPECTRAL_GAMG_THRESHOLD, **SPECTRAL_AMG_SMOOTHER}
        inner.update(inner_overrides)
        outer = fgmres_options(settings, operators.layout)
        outer.update(settings.petsc_options)
        outer.update(overrides)
        # Matrix-free where the shell applies all vertices at once (one potential, separable
        # potentials; laplacian or constant-rate coupling): assembling the N + 2E blocks
        # then costs more set-up and memory than it saves per product. Otherwise assembled:
        # the shell's loops over vertices or edges would dominate a step.
        self.matrix = operators.shell(a, b)
        if not self.matrix.getPythonContext().batched:
            self.matrix.destroy()
            self.matrix = operators.matrix(a, b)
        self.vertex_preconditioner = VertexBlockPreconditioner(
            operators, a, b, inner, OPTIONS_PREFIX + VERTEX_PREFIX)
        return self._preconditioned(self.vertex_preconditioner, outer)

    def _preconditioned(self, context, outer: dict) -> LinearSolver:
        """The outer Krylov solve on :attr:`matrix` with ``context`` as its (python) PC."""
        ksp = PETSc.KSP().create(self.matrix.getComm())
        ksp.setOperators(self.matrix)
        pc = ksp.getPC()
        pc.setType("python")
        pc.setPythonContext(context)
        configure_ksp(ksp, outer, OPTIONS_PREFIX, set_up=True)
        return LinearSolver.from_ksp(ksp, self.name)

    def _factorization_precision(self, operators, a: float, b: float, settings,
                                 inner_overrides: dict) -> str:
        """The precision of the spectral solver's MUMPS factorizations (a PETSc option
        ``-rd_spectral_pc_precision`` wins, as everywhere)."""
        if "pc_precision" in inner_overrides:
            return str(inner_overrides["pc_precision"])
        setting = settings.factorization_precision
        if setting == "double" or self.exact:
            return "double"
        return factorization_precision(
            setting, preconditions=True,
            condition=condition_estimate(operators, a, b) if setting == "auto" else 0.0,
            supported=mumps_single_precision_on(operators.layout.comm))

    def solve(self, b: PETSc.Vec, x: PETSc.Vec) -> int:
        """Solve; return the Krylov iterations (for the exact spectral solve: the most any
        scalar mode took). Krylov solves start from ``x`` if its residual is below ``|b|``,
        else from zero (a rough guess, e.g. right after rough initial data, costs more
        iterations than it saves)."""
        if self.takes_initial_guess:
            matrix = self._solver.ksp.getOperators()[0]
            if self._residual is None:
                self._residual, self._correction = b.duplicate(), b.duplicate()
            matrix.mult(x, self._residual)
            self._residual.aypx(-1.0, b)  # b − A x
            rhs_norm, residual_norm = b.norm(), self._residual.norm()
            if residual_norm >= rhs_norm:
                x.zeroEntries()
            elif self._corrects_guess:
                return self._correct(x, rhs_norm, residual_norm)
        iterations = self._solver.solve(b, x)
        if self.preconditioner is not None and self.exact:
            return self.preconditioner.last_iterations
        return iterations

    def _correct(self, x: PETSc.Vec, rhs_norm: float, residual_norm: float) -> int:
        """``x += A⁻¹ r`` for ``r = b − A x`` (in ``self._residual``) until the residual is
        at most ``max(rtol·|b|, atol)``, the block solve's own test."""
        pc, ksp = self.preconditioner, self._solver.ksp
        exact = pc is not None and self.exact
        rtol, atol = pc.block_tolerances if exact else ksp.getTolerances()[:2]
        if residual_norm <= max(rtol * rhs_norm, atol):
            return 0  # the guess already solves it (e.g. a steady state)
        # Relative to |r| instead of |b|: the same absolute tolerance.
        scaled = rtol * rhs_norm / residual_norm
        if exact:
            pc.block_tolerances = (scaled, atol)
        else:
            ksp.setTolerances(rtol=scaled)
        try:
            iterations = self._solver.solve(self._residual, self._correction)
        finally:
            if exact:
                pc.block_tolerances = (rtol, atol)
            else:
                ksp.setTolerances(rtol=rtol)
        x.axpy(1.0, self._correction)
        return pc.last_iterations if exact else iterations

    def destroy(self) -> None:
        self._solver.destroy()
        for vec in (self._residual, self._correction):
            if vec is not None:
                vec.destroy()
        if self.preconditioner is not None:
            self.preconditioner.destroy()
        if self.vertex_preconditioner is not None:
            self.vertex_preconditioner.destroy()
        if self.matrix is not None:
            self.matrix.destroy()


class _EarlierSetup:
    """A PETSc Python preconditioner that applies a :class:`BlockSolver`'s set-up as it is:
    its factorization (an exact solve of the matrix it was made for), or its preconditioner
    (spectral, vertex blocks, fieldsplit, ILU)."""

    def __init__(self, setup: BlockSolver):
        self.pc = setup._solver.ksp.getPC()

    def setUp(self, pc) -> None:  # noqa: N802 - PETSc's name
        """Nothing to set up: the set-up is the earlier one's."""

    def apply(self, pc, x: PETSc.Vec, y: PETSc.Vec) -> None:
        self.pc.apply(x, y)


class ReusedSetupSolver:
    """Solves ``a (I ⊗ M) + b A`` with the operators' current values, preconditioned by a
    :class:`BlockSolver` set up for other values (a β some steps back).

    Rebuilding a factorization or a spectral set-up whenever β moves a little costs more
    than a few Krylov iterations on the current operator with the old set-up as the
    preconditioner. Applying the old factorization alone (``preonly``) would solve the old
    operator: the FGMRES here is on the current one (a matrix-free shell of the operators'
    current values), to the block solve's tolerances. Its right preconditioning tests the
    true residual.

    Args:
        setup: The solver whose set-up preconditions (kept; destroyed by the caller).
        operators: The block operators, at their current values.
        mass_coefficient: ``a``.
        operator_coefficient: ``b``.
        settings: The ``[solver]`` settings (tolerances and iteration limit).
        name: What is being solved, for error messages.
    """

    def __init__(self, setup: BlockSolver, operators, mass_coefficient: float,
                 operator_coefficient: float, settings: SolverSettings, *, name: str):
        self.setup = setup
        self.matrix = operators.shell(mass_coefficient, operator_coefficient)
        ksp = PETSc.KSP().create(self.matrix.getComm())
        ksp.setOperators(self.matrix)
        pc = ksp.getPC()
        pc.setType("python")
        pc.setPythonContext(_EarlierSetup(setup))
        configure_ksp(ksp, fgmres_options(settings, operators.layout),
                      OPTIONS_PREFIX + REUSED_PREFIX, set_up=True)
        ksp.setInitialGuessNonzero(True)
        self._solver = LinearSolver.from_ksp(ksp, name)
        self.kind = setup.kind
        self.options = setup.options
        #: ``solve`` starts from its ``x``: worth predicting it.
        self.takes_initial_guess = True

    def solve(self, b: PETSc.Vec, x: PETSc.Vec) -> int:
        """Solve from the guess ``x``; return the FGMRES iterations."""
        return self._solver.solve(b, x)

    def destroy(self) -> None:
        """Free the KSP and the shell (not the set-up, which the caller owns)."""
        self._solver.destroy()
        self.matrix.destroy()
