"""Vertex expressions as short sums ``f(x, g) = c_0(g) + Σ_k c_k(g) φ_k(x)``.

Many per-vertex potentials are a few fixed functions of ``x`` with vertex-dependent weights:
scaled bowls ``a_g |x − c|²``, shifted ones ``|x − c_g|²`` (``= |x|² − 2 c_g·x + |c_g|²``),
tilts ``V(x) + a_g·x``, and coefficients from per-vertex data (``|x − c|² + s*loss[g]``,
``depth[g]*exp(-|x|²)``: a data column ``name[g]`` is a function of ``g``). The drift form
is linear in ``V``, so then
``K_g = β S + Σ_k c_k(g) D[φ_k]`` costs ``1 + r`` assemblies for all vertices instead of N,
and nodal values are one small matrix product. Terms whose coefficients are equal at every
vertex share one basis function. :func:`separate` finds such a sum by walking
the expression tree (sums, products, integer powers up to 4, division by ``x``-free factors;
a function of an argument that mixes ``x`` and ``g`` is not separable) and returns ``None``
when there is none with fewer than N terms. Nothing is approximated: the terms are exact
rewrites of the user's expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rdgraph.problem.expressions import Bin, Call, Data, Expression, Neg, Node, Num, Var, X

__all__ = ["Separation", "separate"]

# Expansion of products and powers is capped: a longer sum would not save assemblies.
_MAX_TERMS = 32
_MAX_POWER = 4
_ONE = Num(1.0)


@dataclass(frozen=True)
class Separation:
    """``f(x, g) = constants[g] + Σ_k coefficients[g, k] basis[k](x)``.

    Attributes:
        basis: The ``x``-dependent functions ``φ_k`` (expressions in ``x`` only).
        coefficients: ``c_k(g)``, shape ``(N, r)``.
        constants: ``c_0(g)``, shape ``(N,)`` (no ``x``, so no part of a gradient).
    """

    basis: tuple[Expression, ...]
    coefficients: np.ndarray
    constants: np.ndarray

    @property
    def rank(self) -> int:
        return len(self.basis)

    def basis_values(self, points: np.ndarray) -> np.ndarray:
        """The basis functions ``φ_k`` at points of shape ``(3, P)``, shape ``(r, P)``."""
        return np.array([f.evaluate(points) for f in self.basis]).reshape(self.rank,
                                                                          points.shape[1])

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """Values at points of shape ``(3, P)`` for every vertex, shape ``(N, P)``."""
        phi = self.basis_values(points)
        with np.errstate(all="ignore"):  # NaN/inf are the caller's to report
            return self.coefficients @ phi + self.constants[:, None]


def separate(exprs: Expression | list[Expression], n: int) -> Separation | None:
    """The shortest sum this module finds for ``n`` vertices, or ``None`` if none has < n terms.

    Two splittings are tried: x-only subtrees whole (fewest terms for one expression in g),
    and x-only sums split into their terms (so that per-vertex lists share them).

    Args:
        exprs: One expression in ``x`` and ``g``, or one expression in ``x`` per vertex.
        n: Number of vertices.
    """
    candidates = [_separation(exprs, n, fine) for fine in (False, True)]
    candidates = [c for c in candidates if c is not None]
    return min(candidates, key=lambda c: c.rank, default=None)


def _separation(exprs, n: int, fine: bool) -> Separation | None:
    # The vertices of each distinct expression, to evaluate them together: O(N) array work,
    # not N Python-level evaluations (nor N hashes of one expression's tree for all N).
    if isinstance(exprs, Expression):
        vertices = {exprs: np.arange(n, dtype=np.int64)}
    else:
        members: dict[Expression, list[int]] = {}
        for g, expr in enumerate(exprs):
            members.setdefault(expr, []).append(g)
        vertices = {expr: np.array(g, dtype=np.int64) for expr, g in members.items()}
    data = next((e.data for e in vertices if e.data is not None), None)
    split = {}
    for expr in vertices:
        terms = _split(expr.tree, fine)
        if terms is None:
            return None
        split[expr] = terms
    basis = list(dict.fromkeys(key for terms in split.values() for key in terms if key is not None))
    if len(basis) >= n:
        return None
    column = {key: k for k, key in enumerate(basis)}
    coefficients = np.zeros((n, len(basis)))
    constants = np.zeros(n)
    for expr, g in vertices.items():
        origin = np.zeros((3, g.size))
        for key, coefficient in split[expr].items():
            value = _expression(coefficient, data).evaluate(origin, g=g)
            if key is None:
                constants[g] += value
            else:
                coefficients[g, column[key]] += value
    basis, coefficients = _merge_equal_columns(basis, coefficients)
    return Separation(tuple(_expression(key, data) for key in basis), coefficients, constants)


def _merge_equal_columns(basis: list, coefficients: np.ndarray) -> tuple[list, np.ndarray]:
    """One basis function ``φ_a + φ_b`` for terms whose coefficients are equal at every vertex
    (``depth[g]·(x₀² + x₁²)``): one assembly and one product fewer per pair, and exact, as
    only bitwise-equal columns are merged."""
    merged: dict[bytes, int] = {}
    keys: list = []
    columns: list[np.ndarray] = []
    for key, column in zip(basis, coefficients.T, strict=True):
        signature = np.ascontiguousarray(column).tobytes()
        if signature in merged:
            k = merged[signature]
            keys[k] = Bin("+", keys[k], key)
        else:
            merged[signature] = len(keys)
            keys.append(key)
            columns.append(column)
    if len(keys) == len(basis):
        return basis, coefficients
    return keys, np.column_stack(columns) if columns else coefficients[:, :0]


def _expression(node: Node, data=None) -> Expression:
    variables = frozenset(v for v in ("x0", "x1", "x2", "g", "t") if _uses(node, v))
    return Expression(_source(node), node, variables, data)


def _uses(node: Node, name: str) -> bool:
    """Whether ``node`` contains variable ``name`` ("x0".."x2", "g" or "t")."""
    if isinstance(node, X):
        return name == f"x{node.index}"
    if isinstance(node, Var):
        return name == node.name
    if isinstance(node, Data):
        return name == "g"
    if isinstance(node, Neg | Call):
        return _uses(node.operand if isinstance(node, Neg) else node.arg, name)
    if isinstance(node, Bin):
        return _uses(node.left, name) or _uses(node.right, name)
    return False


def _has_x(node: Node) -> bool:
    return any(_uses(node, f"x{i}") for i in range(3))


def _has_parameters(node: Node) -> bool:
    return _uses(node, "g") or _uses(node, "t")


def _split(node: Node, fine: bool) -> dict | None:
    """``{φ: c}`` with ``node = Σ c φ`` (key ``None`` for the x-free part), or ``None``."""
    if not _has_x(node):
        return {None: node}
    # fine: sums and numeric multiples of x-only terms are split too. Other x-only subtrees
    # stay whole, so that nothing is expanded into a cancelling sum.
    if not _has_parameters(node) and not (fine and (
            isinstance(node, Neg) or isinstance(node, Bin) and (
                node.op in "+-" or node.op in "*/" and not (
                    _has_x(node.left) and _has_x(node.right))))):
        return {node: _ONE}
    if isinstance(node, Neg):
        inner = _split(node.operand, fine)
        return None if inner is None else {k: Neg(c) for k, c in inner.items()}
    if not isinstance(node, Bin):
        return None  # a function of an argument mixing x and g
    if node.op in "+-":
        left, right = _split(node.left, fine), _split(node.right, fine)
        if left is None or right is None:
            return None
        out = dict(left)
        for key, c in right.items():
            c = c if node.op == "+" else Neg(c)
            out[key] = Bin("+", out[key], c) if key in out else c
        return _capped(out)
    if node.op == "*":
        return _product(_split(node.left, fine), _split(node.right, fine))
    if node.op == "/":
        if _has_x(node.right):
            if _has_parameters(node.right):
                return None
            # A pure-x denominator belongs to every basis function.
            inner = _split(node.left, fine)
            return None if inner is None else {
                Bin("/", _ONE if k is None else k, node.right): c for k, c in inner.items()}
        inner = _split(node.left, fine)
        return None if inner is None else {k: Bin("/", c, node.right) for k, c in inner.items()}
    # "**": integer powers of a separable base expand into products.
    exponent = node.right
    if not (isinstance(exponent, Num) and float(exponent.value).is_integer()
            and 1 <= exponent.value <= _MAX_POWER):
        return None
    base = _split(node.left, fine)
    out = base
    for _ in range(int(exponent.value) - 1):
        out = _product(out, base)
    return out


def _product(left: dict | None, right: dict | None) -> dict | None:
    if left is None or right is None or len(left) * len(right) > _MAX_TERMS ** 2:
        return None
    out: dict = {}
    for k1, c1 in left.items():
        for k2, c2 in right.items():
            if k1 is None or k2 is None:
                key = k2 if k1 is None else k1
            else:
                # Monomials in any order are one basis function: sort their factors.
                factors = sorted(_factors(k1) + _factors(k2), key=repr)
                key = factors[0]
                for factor in factors[1:]:
                    key = Bin("*", key, factor)
            c = Bin("*", c1, c2)
            out[key] = Bin("+", out[key], c) if key in out else c
    return _capped(out)


def _factors(node: Node) -> list[Node]:
    if isinstance(node, Bin) and node.op == "*":
        return _factors(node.left) + _factors(node.right)
    return [node]


def _capped(terms: dict) -> dict | None:
    return terms if len(terms) <= _MAX_TERMS else None


def _source(node: Node) -> str:
    """Readable text of a node (for messages and ``str``), fully parenthesized."""
    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, X):
        return f"x[{node.index}]"
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Data):
        return f"{node.name}[g]"
    if isinstance(node, Neg):
        return f"-({_source(node.operand)})"
    if isinstance(node, Call):
        return f"{node.name}({_source(node.arg)})"
    return f"({_source(node.left)} {node.op} {_source(node.right)})"
