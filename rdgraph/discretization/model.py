"""The weak forms of the semi-discrete reaction–diffusion system on one shared space.

Every vertex uses the same Lagrange space. Forms are compiled once with the vertex index
as a ``fem.Constant`` and re-assembled per vertex (or per edge), so a graph with N
vertices costs a handful of compiled forms, not N or N².
"""

from __future__ import annotations

import basix
import numpy as np
import ufl

from rdgraph.compat import MPI, dolfinx
from rdgraph.discretization.point_values import PointValues, batch_slices
from rdgraph.discretization.ufl_expressions import to_ufl
from rdgraph.errors import InputError
from rdgraph.problem.config import ModelSettings, SpaceSettings
from rdgraph.problem.expressions import Expression, PythonFunction
from rdgraph.problem.graph import Graph
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.problem.separable import Separation, separate
from rdgraph.problem.validation import parse_per_vertex, vertex_data

__all__ = ["Model"]

fem = dolfinx.fem

# exp() overflows float64 past ~709.8; keep some headroom for sums of rates.
_MAX_EXPONENT = 700.0


class Model:
    """Forms and coefficients of the model in docs/model.md for one mesh, graph and coupling.

    Args:
        mesh: The shared mesh.
        graph: The vertex graph.
        model: Model settings (coupling, beta, expressions).
        space: Space settings (degree, quadrature degree).
        potential: A Python callable ``V(x, g)`` instead of ``model.potential(s)`` (see
            :class:`rdgraph.problem.expressions.PythonFunction`). The forms then use its
            interpolant in the Lagrange space, set per vertex: N assemblies, no separation.
        initial: A Python callable ``ρ⁰(x, g)`` instead of ``model.initial(s)``.
        beta_range: The smallest and largest β of a temperature schedule over the run
            (:meth:`rdgraph.problem.schedule.BetaSchedule.check`): the forms start at the
            schedule's β(0), and the rates are checked for overflow at the smallest β.
            ``None``: ``model.beta`` is a number.
    """

    def __init__(
        self, mesh: dolfinx.mesh.Mesh, graph: Graph, model: ModelSettings, space: SpaceSettings,
        *, potential=None, initial=None, beta_range: tuple[float, float] | None = None,
    ):
        self.mesh = mesh
        self.graph = graph
        self.settings = model
        self.coupling = model.coupling
        self.degree = space.degree
        gdim = mesh.geometry.dim
        n = graph.n
        self.data = vertex_data(model, graph)
        self.potentials = parse_per_vertex(model, "potential", n, ("x", "g"), gdim, "0",
                                           self.data)
        self.initials = parse_per_vertex(model, "initial", n, ("x", "g"), gdim, "1", self.data)
        self.sources = parse_per_vertex(model, "source", n, ("x", "g", "t"), gdim, None,
                                        self.data)
        for key, function in (("potential", potential), ("initial", initial)):
            if function is not None:  # replaces model.{key}(s) of the settings
                setattr(self, key + "s", PythonFunction(function, key))
        self._python_potential: dict[int, fem.Function] = {}

        self.V = fem.functionspace(mesh, ("Lagrange", space.degree))
        self._dof_points = None  # dof coordinates, tabulated once for nodal values
        self._quadrature = None  # the rule of dx on the owned cells, computed once
        self._points: PointValues | None = None  # B at those points, made on first use
        # At those points: the shared V (P, 1), or the separation's φ_k (P, r).
        self._potential_points = None
        self.num_owned = self.V.dofmap.index_map.size_local
        self.x = ufl.SpatialCoordinate(mesh)
        scalar = dolfinx.default_scalar_type
        self._g = fem.Constant(mesh, scalar(0))  # vertex a form is assembled for
        self._h = fem.Constant(mesh, scalar(0))  # second vertex, for edge forms
        # Data columns name[g] in forms: one constant per column and vertex slot, set with
        # the vertex (set_vertex), so that the forms stay compiled once for all N.
        names = () if self.data is None else self.data.names
        self._data_g = {name: fem.Constant(mesh, scalar(0)) for name in names}
        self._data_h = {name: fem.Constant(mesh, scalar(0)) for name in names}
        self.time = fem.Constant(mesh, scalar(0))
        schedule = BetaSchedule(model.beta)
        #: β(0) and the extremes of β over the run (one value for a constant β).
        self.beta_range = beta_range if beta_range is not None else (schedule(0.0),) * 2
        self.beta = fem.Constant(mesh, scalar(schedule(0.0)))
        self._laplace_form = None  # ∫∇u·∇v, compiled when β first changes
        qdeg = self.quadrature_degree = space.quadrature_degree or 2 * space.degree + 2
        self.dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": qdeg})

        self.potential_g = self._vertex_ufl(self.potentials, self._g)
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        dx, beta = self.dx, self.beta
        self.mass_form = fem.form(u * v * dx)
        flux = beta * ufl.grad(u) + u * ufl.grad(self.potential_g)
        self.stiffness_form = fem.form(ufl.inner(flux, ufl.grad(v)) * dx)
        self.rate_form = None
        if self.coupling == "gibbs" and model.gibbs_rates == "weighted-mass":
            potential_h = self._vertex_ufl(self.potentials, self._h)
            self.rate_form = fem.form(self.rate(self.potential_g, potential_h) * u * v * dx)
        self.source_form = None
        if self.sources is not None:
            self.source_form = fem.form(self._vertex_ufl(self.sources, self._g) * v * dx)
        # V_g = c_0(g) + Σ_k c_k(g) φ_k(x) with fewer than N terms: K_g from 1 + r assemblies.
        self.potential_separation = None if self.shared_potential or isinstance(
            self.potentials, PythonFunction) else separate(self.potentials, n)
        self.diffusion_form = self.drift_form = None
        if self.potential_separation is not None:
            self._basis_index = fem.Constant(mesh, scalar(0))
            self.diffusion_form = fem.form(beta * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx)
            if self.potential_separation.rank:
                phi = self._vertex_ufl(list(self.potential_separation.basis), self._basis_index)
                self.drift_form = fem.form(u * ufl.inner(ufl.grad(phi), ufl.grad(v)) * dx)

        # Vertex expressions are evaluated once: set-up must not grow with N more than it must.
        self._initial_separation = None if isinstance(
            self.initials, PythonFunction) else separate(self.initials, n)
        self._potential_nodal = self._nodal_all(self.potentials, self.potential_separation)
        self._initial_nodal = self._nodal_all(self.initials, self._initial_separation)
        # NaN/inf expressions first: they would otherwise surface as overflowing rates.
        self.check_finite()
        self.check_finite_at_points()
        self._check_rates()
        self._energy_setup()

    # -- expressions -------------------------------------------------------------------------
    @property
    def beta_value(self) -> float:
        """The current β (the value of the forms' constant :attr:`beta`)."""
        return float(self.beta.value)

    def set_beta(self, beta: float) -> None:
        """Set the temperature of the forms and of the Gibbs state (no assembly here: the
        Gibbs weights are recomputed when next asked for)."""
        self.beta.value = beta

    @property
    def laplace_form(self):
        """The form ``∫∇u·∇v``: how the stiffness changes with β (compiled on first use)."""
        if self._laplace_form is None:
            u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
            self._laplace_form = fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * self.dx)
        return self._laplace_form

    def rate(self, potential_g, potential_h):
        """Detailed-balance jump rate g → h per unit weight, ``exp((V_g − V_h) / 2β)``."""
        return ufl.exp((potential_g - potential_h) / (2 * self.beta))

    def _vertex_ufl(self, exprs, index: fem.Constant):
        """A UFL expression equal to vertex ``index``'s expression, compiled once for all."""
        t = self.time
        if isinstance(exprs, PythonFunction):
            # The interpolant of V_index, filled in by set_vertex from the nodal values.
            function = fem.Function(self.V)
            self._python_potential[id(index)] = function
            return function
        if isinstance(exprs, Expression):
            data = self._data_h if index is self._h else self._data_g
            value = to_ufl(exprs, self.x, g=index, t=t, data=data)
        else:
            # A list: select by the index constant (one compiled form for all vertices).
            value = ufl.as_ufl(to_ufl(exprs[-1], self.x, t=t))
            for i in range(len(exprs) - 2, -1, -1):
                value = ufl.conditional(ufl.lt(index, i + 0.5), to_ufl(exprs[i], self.x, t=t),
                                        value)
        value = ufl.as_ufl(value)
        if not ufl.domain.extract_domains(value):
            # A plain number has no mesh: UFL cannot differentiate or compile it alone.
            value = fem.Constant(self.mesh, dolfinx.default_scalar_type(float(value)))
        return value

    def _nodal(self, exprs, g: int, t: float = 0.0) -> np.ndarray:
        """Nodal values of vertex ``g``'s expression on local dofs (owned and ghost)."""
        return self._values(exprs, g, self._dof_coordinates(), t)

    @staticmethod
    def _values(exprs, g: int, points: np.ndarray, t: float = 0.0) -> np.ndarray:
        """Values of vertex ``g``'s expression at ``points`` of shape ``(3, P)``."""
        expr = exprs if isinstance(exprs, Expression | PythonFunction) else exprs[g]
        return np.asarray(expr.evaluate(points, g=g, t=t), dtype=np.float64) * np.ones(
            points.shape[1]
        )

    def _nodal_all(self, exprs, separation: Separation | None = None) -> np.ndarray:
        """Nodal values for every vertex, ``(N, local dofs)``; a read-only broadcast of one
        row when the expression has no ``g``."""
        return self._values_all(exprs, self._dof_coordinates(), separation)

    def _values_all(self, exprs, points: np.ndarray,
                    separation: Separation | None = None) -> np.ndarray:
        """Values at ``points`` for every vertex, ``(N, P)`` (a broadcast when there is no
        ``g``)."""
        batches = list(self._value_batches(exprs, points, separation))
        if len(batches) == 1:
            return batches[0][1]
        return np.concatenate([values for _, values in batches])

    def _value_batches(self, exprs, points: np.ndarray, separation: Separation | None = None,
                       t: float = 0.0):
        """``(vertices, values)`` for batches of vertices covering all N, ``values`` of shape
        ``(batch size, P)`` at ``points`` of shape ``(3, P)``: bounded temporaries, and one
        NumPy evaluation per batch rather than one per vertex."""
        n, count = self.graph.n, points.shape[1]
        if isinstance(exprs, Expression) and not exprs.depends_on("g"):
            yield slice(0, n), np.broadcast_to(self._values(exprs, 0, points, t), (n, count))
            return
        if separation is not None:  # r basis functions, one small matrix product
            yield slice(0, n), separation.evaluate(points)
            return
        for batch in batch_slices(n, count):
            yield batch, self._batch_values(exprs, points, batch, t)

    def _batch_values(self, exprs, points: np.ndarray, batch: slice,
                      t: float = 0.0) -> np.ndarray:
        """Values of the vertices of ``batch`` at ``points``, ``(batch size, P)``."""
        vertices = np.arange(batch.start, batch.stop)
        count = points.shape[1]
        if isinstance(exprs, Expression):
            # The points repeated once per vertex, g constant along each copy.
            return exprs.evaluate(np.tile(points, vertices.size), g=np.repeat(vertices, count),
                                  t=t).reshape(vertices.size, count)
        values = np.empty((vertices.size, count))
        known: dict = {}  # a list repeats few distinct expressions
        for row, g in enumerate(vertices):  # a Python callable is called once per vertex
            expr = exprs if isinstance(exprs, PythonFunction) else exprs[g]
            if isinstance(expr, PythonFunction) or expr.depends_on("g"):
                values[row] = self._values(exprs, g, points, t)
                continue
            if expr not in known:
                known[expr] = self._values(exprs, g, points, t)
            values[row] = known[expr]
        return values

    def potentials_at(self, points: np.ndarray) -> np.ndarray:
        """``V_g`` at ``points`` of shape ``(3, P)`` for every vertex, ``(N, P)`` (a read-only
        broadcast when all are equal)."""
        return self._values_all(self.potentials, points, self.potential_separation)

    def quadrature_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rule of :attr:`dx` on this rank's owned cells.

        Returns:
            The reference points ``(q, tdim)``; the physical points ``(3, P)``, cell by cell,
            ``P = q × owned cells``; and their weights times ``|det J|``, so that
            ``Σ_p w_p f(x_p)`` is what ``assemble_scalar(f * dx)`` computes on this rank.
        """
        if self._quadrature is not None:
            return self._quadrature
        mesh = self.mesh
        reference, weights = basix.make_quadrature(mesh.basix_cell(), self.quadrature_degree)
        cells = np.arange(mesh.topology.index_map(mesh.topology.dim).size_local, dtype=np.int32)
        x = fem.Expression(self.x, reference).eval(mesh, cells)  # (cells, points, gdim)
        volume = fem.Expression(abs(ufl.JacobianDeterminant(mesh)), reference).eval(mesh, cells)
        quadrature = (volume.reshape(len(cells), -1) * weights).ravel()
        coordinates = np.zeros((3, quadrature.size))
        coordinates[: x.shape[-1]] = x.reshape(-1, x.shape[-1]).T
        self._quadrature = (reference, coordinates, quadrature)
        return self._quadrature

    def point_values(self) -> PointValues | None:
        """The densities at the points of :meth:`quadrature_points` in batches of vertices,
        or ``None`` for elements with dof transformations (collective on first call)."""
        if self._points is None and PointValues.applicable(self.V):
            reference, _, weights = self.quadrature_points()
            self._points = PointValues(self.V, reference, weights, self.graph.n)
        return self._points

    def _potential_at_points(self, batch: slice) -> np.ndarray:
        """``V_g`` at the points of :meth:`quadrature_points` for the vertices of ``batch``:
        ``(points, batch size)``, or ``(points, 1)`` when all vertices share it.

        What the forms see there: the expression at the physical points, or for a Python
        callable its interpolant (:meth:`point_values` is then not ``None``).
        """
        _, coordinates, _ = self.quadrature_points()
        if self.shared_potential:
            if self._potential_points is None:
                self._potential_points = self.potentials.evaluate(coordinates)[:, None]
            return self._potential_points
        separation = self.potential_separation
        if separation is not None:
            if self._potential_points is None:
                self._potential_points = separation.basis_values(coordinates).T.copy()
            values = self._potential_points @ separation.coefficients[batch].T
            values += separation.constants[batch]
            return values
        if isinstance(self.potentials, PythonFunction):
            return self._points.interpolate(self._potential_nodal[batch].T)
        return self._batch_values(self.potentials, coordinates, batch).T

    def _dof_coordinates(self) -> np.ndarray:
        if self._dof_points is None:
            self._dof_points = self.V.tabulate_dof_coordinates().T
        return self._dof_points

    def set_basis_function(self, k: int) -> None:
        """Select ``φ_k`` of the potential's separation in :attr:`drift_form`."""
        self._basis_index.value = k

    @property
    def shared_potential(self) -> bool:
        """All vertices have the same potential (one expression without ``g``)."""
        return isinstance(self.potentials, Expression) and not self.potentials.depends_on("g")

    @property
    def same_stiffness(self) -> bool:
        """Every vertex has the same stiffness ``K_g``: one potential, or separable potentials
        that differ by constants only (then the gibbs rates are constants too)."""
        if self.shared_potential:
            return True
        separation = self.potential_separation
        return separation is not None and bool(
            np.all(separation.coefficients == separation.coefficients[0]))

    def potential_nodal(self, g: int) -> np.ndarray:
        """Nodal values of ``V_g`` on local dofs."""
        return self._potential_nodal[g]

    def initial_nodal(self, g: int) -> np.ndarray:
        """Nodal values of the initial density of vertex ``g`` on local dofs (a copy)."""
        return self._initial_nodal[g].copy()

    def check_finite(self) -> None:
        """Refuse potentials and initial densities that are NaN/inf on the mesh (collective)."""
        checks = (("potential", self._potential_nodal, self.potentials),
                  ("initial", self._initial_nodal, self.initials))
        # One flag per vertex and expression, (2, N), one reduction for all vertices.
        local = np.array([np.isfinite(nodal).all(axis=1) for _, nodal, _ in checks],
                         dtype=np.int32)
        finite = np.empty_like(local)
        self.mesh.comm.Allreduce(local, finite, op=MPI.MIN)
        for (what, _, exprs), ok in zip(checks, finite, strict=True):
            if not ok.all():
                g = int(np.argmin(ok))  # the first vertex that fails
                src = exprs if isinstance(exprs, Expression | PythonFunction) else exprs[g]
                raise InputError(
                    f"model.{what} '{src}' is not finite (NaN or inf) on the mesh "
                    f"for vertex g = {g}"
                )

    def check_finite_at_points(self, t_end: float | None = None) -> None:
        """Refuse potentials, initial densities and sources that are NaN/inf at a node or at
        a quadrature point (collective).

        The nodes are taken at their coordinates rounded to 1e-12 of the domain's size: a
        node meant to lie on a singularity (``log(x[0]**2)`` at ``x[0] = 0``) often sits
        1e-17 away from it in floating point, where the value is finite but meaningless.
        Sources are checked at ``t = 0`` (and at ``t_end`` when given).
        """
        nodes = self._dof_coordinates()
        scale = max(float(np.abs(nodes).max(initial=0.0)), 1e-300)
        rounded = np.round(nodes / scale, 12) * scale
        _, quadrature, _ = self.quadrature_points()
        items = [("potential", self.potentials, self.potential_separation, (0.0,)),
                 ("initial", self.initials, self._initial_separation, (0.0,))]
        if self.sources is not None:
            items.append(("source", self.sources, None,
                          (0.0,) if t_end is None else (0.0, float(t_end))))
        local = np.array([self._finite_at((rounded, quadrature), exprs, separation, times)
                          for _, exprs, separation, times in items], dtype=np.int32)
        finite = np.empty_like(local)
        self.mesh.comm.Allreduce(local, finite, op=MPI.MIN)
        for (what, exprs, _, _), ok in zip(items, finite, strict=True):
            if not ok:
                single = isinstance(exprs, Expression | PythonFunction)
                text = f"'{exprs}'" if single else "[" + ", ".join(f"'{e}'" for e in exprs) + "]"
                key = f"model.{what}" if single else f"model.{what}s"
                raise InputError(f"{key} {text} is not finite (NaN or inf) at a node or a "
                                 "quadrature point of the mesh")

    def _finite_at(self, point_sets, exprs, separation: Separation | None,
                   times: tuple[float, ...]) -> bool:
        """Whether every vertex's expression is finite at every point (this rank)."""
        for points in point_sets:
            if separation is not None:
                # c0(g) + Σ c_k(g) φ_k(x): finite where every φ_k with a coefficient is.
                used = np.any(separation.coefficients != 0, axis=0)
                if not (np.isfinite(separation.coefficients).all()
                        and np.isfinite(separation.constants).all()):
                    return False
                for k, phi in enumerate(separation.basis):
                    if used[k] and not np.isfinite(phi.evaluate(points)).all():
                        return False
                continue
            for t in times:
                for _, values in self._value_batches(exprs, points, None, t):
                    if not np.isfinite(values).all():
                        return False
        return True

    def check_initial_mass(self, masses: np.ndarray) -> None:
        """Refuse an initial density that is negative at a node or has no mass (collective).

        Args:
            masses: The initial mass of every vertex (the same on every rank).
        """
        comm = self.mesh.comm
        # No |values| temporary: the nodal values of all vertices can be large.
        lowest = float(np.min(self._initial_nodal, initial=np.inf))
        highest = float(np.max(self._initial_nodal, initial=-np.inf))
        lowest, highest = comm.allreduce(lowest, op=MPI.MIN), comm.allreduce(highest, op=MPI.MAX)
        largest = max(abs(lowest), abs(highest), 0.0)
        source = "model.initials" if self.settings.initials is not None else "model.initial"
        # Round-off of node coordinates (x[0] = -3e-18 for x[0] = 0) is not a negative density.
        if lowest < -1e-12 * largest:
            raise InputError(f"{source} is negative at a node (down to {lowest:.4g}): give a "
                             "density >= 0 everywhere, with positive total mass")
        total = float(np.sum(masses))
        if not total > 0:
            raise InputError(f"{source} has total mass {total:.4g}: the flow needs an initial "
                             "density with positive mass")

    def check_positive_initial(self, what: str) -> None:
        """Refuse initial densities that are not > 0 at every node (collective).

        Args:
            what: The setting that needs it, e.g. ``"time.scheme = 'jko'"``.
        """
        local = bool(np.all(self._initial_nodal > 0))
        if not self.mesh.comm.allreduce(local, op=MPI.LAND):
            raise InputError(f"{what} needs an initial density > 0 at every node "
                             "(Φ = β log ρ + V); give a positive initial density")

    def _check_rates(self) -> None:
        if self.coupling != "gibbs" or not self.graph.num_edges:
            return
        beta = min(self.beta_range)  # the rates are largest at the smallest β
        local = 0.0
        if not self.shared_potential:  # else every difference is 0
            tails, heads, _ = self.graph.edge_arrays()
            nodal = self._potential_nodal
            # Bounded (edges, dofs) temporaries.
            for edges in batch_slices(tails.size, nodal.shape[1]):
                difference = np.abs(nodal[tails[edges]] - nodal[heads[edges]])
                local = max(local, float(np.max(difference, initial=0.0)))
        largest = self.mesh.comm.allreduce(local, op=MPI.MAX) / (2 * beta)
        if not np.isfinite(largest) or largest > _MAX_EXPONENT:
            raise InputError(
                f"gibbs rates overflow: |V_g - V_h| / (2 beta) reaches {largest:.4g} on the mesh "
                f"(limit {_MAX_EXPONENT:g} for float64) with model.beta = {beta:g}; "
                "raise beta or reduce the potential differences"
            )

    # -- assembly ----------------------------------------------------------------------------
    def set_vertex(self, g: int, h: int = 0) -> None:
        self._g.value = g
        self._h.value = h
        for name, constant in self._data_g.items():
            constant.value = self.data[name][g]
            self._data_h[name].value = self.data[name][h]
        for index, vertex in ((self._g, g), (self._h, h)):
            function = self._python_potential.get(id(index))
            if function is not None:
                function.x.array[:] = self._potential_nodal[vertex]

    def set_time(self, t: float) -> None:
        self.time.value = t

    def assemble_source(self, g: int, t: float) -> np.ndarray:
        """Owned entries of the source vector ``(f_g(t), φ)``."""
        self.set_vertex(g)
        self.set_time(t)
        b = fem.assemble_vector(self.source_form)
        b.scatter_reverse(dolfinx.la.InsertMode.add)
        return b.array[: self.num_owned].copy()

    # -- energies ----------------------------------------------------------------------------
    def _energy_setup(self) -> None:
        comm = self.mesh.comm
        # Shift potentials by their smallest nodal value so exp(-V/beta) stays in range.
        local_min = float(np.min(self._potential_nodal, initial=np.inf))
        self.potential_shift = comm.allreduce(local_min, op=MPI.MIN)
        # The forms below are compiled only where the quadrature points cannot serve
        # (one shared potential, elements with dof transformations).
        self._weight_form = self._energy_forms = None
        self._gibbs_integrals, self._gibbs_beta = None, None
        # At every β of the run: a schedule's weights are checked at its ends (at set-up, on
        # every rank), the smallest β being where exp(-V/β) spreads most.
        for beta in sorted(set(self.beta_range)):
            self._compute_gibbs_integrals(beta)
        self._compute_gibbs_integrals(self.beta_value)

    def _shift_constant(self) -> fem.Constant:
        return fem.Constant(self.mesh, dolfinx.default_scalar_type(self.potential_shift))

    def _assembled_gibbs_integrals(self) -> np.ndarray:
        """This rank's ``∫ exp(−(V_g − V*)/β)``, one assembly per vertex (one for a shared
        potential)."""
        if self._weight_form is None:
            boltzmann = ufl.exp(-(self.potential_g - self._shift_constant()) / self.beta)
            self._weight_form = fem.form(boltzmann * self.dx)
        local = []
        for g in range(1 if self.shared_potential else self.graph.n):
            self.set_vertex(g)
            local.append(fem.assemble_scalar(self._weight_form))
        return np.array(local, dtype=np.float64)

    def _compute_gibbs_integrals(self, beta: float) -> None:
        """``∫ exp(−(V_g − V*)/β)`` for every vertex at ``beta`` (collective)."""
        comm, n = self.mesh.comm, self.graph.n
        current = self.beta_value
        self.beta.value = beta
        try:
            # A Python callable's interpolant needs the tabulation at the points.
            if self.shared_potential or (isinstance(self.potentials, PythonFunction)
                                         and self.point_values() is None):
                local = self._assembled_gibbs_integrals()
            else:
                local = self._gibbs_integrals_at_points()
        finally:
            self.beta.value = current
        weights = np.empty_like(local)
        comm.Allreduce(local, weights, op=MPI.SUM)  # one reduction, not N
        integrals = np.broadcast_to(weights, (n,)).copy()
        if not np.all(np.isfinite(integrals)) or integrals.sum() <= 0:
            raise InputError(
                f"the Gibbs weights exp(-V/beta) are not finite or vanish with "
                f"model.beta = {beta:g}: the potentials vary too much on the mesh"
            )
        self._gibbs_integrals, self._gibbs_beta = integrals, beta

    @property
    def gibbs_integrals(self) -> np.ndarray:
        """``∫ exp(−(V_g − V*)/β)`` per vertex at the current β, ``V*`` the potentials'
        smallest nodal value (collective when β has changed since they were computed)."""
        if self._gibbs_beta != self.beta_value:
            self._compute_gibbs_integrals(self.beta_value)
        return self._gibbs_integrals

    def _gibbs_integrals_at_points(self) -> np.ndarray:
        """This rank's ``∫ exp(−(V_g − V*)/β)`` for all g by the quadrature of :attr:`dx`.

        The rule of ``assemble_scalar`` (same points and weights, owned cells), with ``V_g``
        at the points for a batch of vertices at a time (:meth:`_potential_at_points`):
        array work instead of N form assemblies that each evaluate the whole expression.
        """
        _, _, quadrature = self.quadrature_points()
        scale = -1.0 / self.beta_value
        local = np.empty(self.graph.n)
        for batch in batch_slices(self.graph.n, quadrature.size):  # bounded temporaries
            exponent = self._potential_at_points(batch) - self.potential_shift
            exponent *= scale
            local[batch] = quadrature @ np.exp(exponent, out=exponent)
        return local

    @property
    def gibbs_fractions(self) -> np.ndarray:
        """Vertex masses of the Gibbs state per unit total mass, ``∫π_g / Σ_h ∫π_h``."""
        return self.gibbs_integrals / self.gibbs_integrals.sum()

    @property
    def components(self) -> list[np.ndarray]:
        """The graph's connected components (computed once: O(N²) on a dense graph)."""
        if getattr(self, "_components", None) is None:
            self._components = self.graph.components()
        return self._components

    def gibbs_masses(self, initial_masses: np.ndarray) -> np.ndarray:
        """Vertex masses of the Gibbs state each component of the graph relaxes to.

        Mass cannot cross between components, so each component ``C`` keeps its initial mass
        ``M_C = Σ_{g∈C} m_g(0)`` and shares it as ``M_C ∫π_g / Σ_{h∈C} ∫π_h``. On a
        connected graph this is ``M gibbs_fractions``.

        Args:
            initial_masses: The vertex masses ``m_g(0)``.
        """
        masses = np.zeros(self.graph.n)
        for component in self.components:
            weights = self.gibbs_integrals[component]
            masses[component] = initial_masses[component].sum() * weights / weights.sum()
        return masses

    def gibbs_free_energy(self, initial_masses: np.ndarray) -> float:
        """``F`` of the Gibbs state of :meth:`gibbs_masses`: the smallest free energy of a
        density with those component masses.

        With ``Z_C = Σ_{g∈C} ∫exp(−(V_g − V*)/β)`` (the quadrature of the run's ``F``, ``V*``
        the potentials' minimum) and ``ρ_g = M_C exp(−(V_g − V*)/β) / Z_C``,
        ``F(ρ) = Σ_C M_C (V* + β log(M_C / Z_C))``; for a connected graph
        ``F(ρ) − F_∞ = β H(ρ | ρ_π)`` exactly.
        """
        beta, total = self.beta_value, 0.0
        for component in self.components:
            mass = float(initial_masses[component].sum())
            if mass > 0:  # an empty component holds no entropy
                z = float(self.gibbs_integrals[component].sum())
                total += mass * (self.potential_shift + beta * np.log(mass / z))
        return total

    def energies(self, blocks: np.ndarray, total_mass: float) -> tuple[float, float]:
        """Free energy F(ρ) and relative entropy H(ρ | ρ_π) (collective).

        ρ_π is the Gibbs state scaled to ``total_mass``. Nodal values ≤ 0 count as 0 in
        ``ρ log ρ``.

        Args:
            blocks: The owned nodal values of each vertex, shape ``(N, owned dofs)`` (a
                view of the block vector).
            total_mass: The total mass, for the reference state.
        """
        free, relative = self.vertex_energies(blocks, total_mass)
        return float(free.sum()), float(relative.sum())

    def vertex_energies(self, blocks: np.ndarray,
                        total_mass: float) -> tuple[np.ndarray, np.ndarray]:
        """Each vertex's share of :meth:`energies`: ``∫ β ρ_g log ρ_g + V_g ρ_g`` and
        ``∫ ρ_g log ρ_g + ρ_g ((V_g − V*)/β + log(M/Z))``, two ``(N,)`` arrays (collective).

        Evaluated at the quadrature points of :attr:`dx` for batches of vertices
        (:meth:`point_values`); for elements with dof transformations, by assembling the
        energy forms one vertex at a time.
        """
        log_reference = np.log(self.gibbs_integrals.sum()) - np.log(max(total_mass, 1e-300))
        if self.point_values() is None:
            local = self._assembled_energies(blocks, log_reference)
        else:
            local = self._energies_at_points(blocks, log_reference)
        result = np.empty_like(local)
        self.mesh.comm.Allreduce(local, result, op=MPI.SUM)  # one reduction for all N
        return result[0], result[1]

    def _energies_at_points(self, blocks: np.ndarray, log_reference: float) -> np.ndarray:
        """This rank's ``(2, N)`` energies from the densities at the points, batch by batch.

        Per vertex ``E = Σ w ρ log ρ`` (ρ ≤ 0 counting 0, as in the forms), ``A = Σ w V ρ``
        and ``m = Σ w ρ``; then ``F = β E + A`` and ``H = E + (A − V* m)/β + log(M/Z) m``.
        """
        points = self._points
        beta, shift, weights = self.beta_value, self.potential_shift, points.weights
        local = np.empty((2, self.graph.n))
        for batch in points.batches():
            rho = points.at_points(blocks, batch)
            potential = self._potential_at_points(batch)
            if potential.shape[1] == 1:  # one potential: both linear terms in one product
                mass, linear = np.vstack([weights, weights * potential[:, 0]]) @ rho
            else:
                mass = weights @ rho
                linear = np.einsum("p,pk,pk->k", weights, potential, rho)
            # ρ log ρ with ρ ≤ 0 counting 0: max(ρ, 0) · log(max(ρ, tiny)).
            log_rho = np.log(np.maximum(rho, 1e-300))
            log_rho *= np.maximum(rho, 0.0, out=rho)
            entropy = weights @ log_rho
            local[0, batch] = beta * entropy + linear
            local[1, batch] = entropy + (linear - shift * mass) / beta + log_reference * mass
        return local

    def _assembled_energies(self, blocks: np.ndarray, log_reference: float) -> np.ndarray:
        """This rank's ``(2, N)`` energies by assembling the forms one vertex at a time.

        The vertices are swapped into a single work Function, so the cost in PETSc/MPI
        objects does not grow with N.
        """
        if self._energy_forms is None:
            rho = fem.Function(self.V, name="rho")
            reference = fem.Constant(self.mesh, dolfinx.default_scalar_type(0))
            # Negative nodal undershoots contribute nothing to the entropy terms.
            entropy = ufl.conditional(ufl.gt(rho, 0), rho * ufl.ln(ufl.max_value(rho, 1e-300)),
                                      0)
            potential, beta = self.potential_g, self.beta
            free = fem.form((beta * entropy + potential * rho) * self.dx)
            relative = fem.form((entropy + rho * ((potential - self._shift_constant()) / beta
                                                  + reference)) * self.dx)
            self._energy_forms = (rho, reference, free, relative)
        rho, reference, free, relative = self._energy_forms
        reference.value = log_reference
        local = np.empty((2, self.graph.n))
        owned = self.num_owned
        for g, values in enumerate(blocks):
            rho.x.array[:owned] = values
            rho.x.scatter_forward()  # the ghosts, for the cells this rank assembles
            self.set_vertex(g)
            local[0, g] = fem.assemble_scalar(free)
            local[1, g] = fem.assemble_scalar(relative)
        return local
