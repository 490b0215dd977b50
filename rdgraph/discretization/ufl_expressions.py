"""User expressions (:class:`rdgraph.problem.expressions.Expression`) as UFL expressions.

The problem layer parses and validates expressions without UFL; here they become UFL, with
UFL's functions in place of NumPy's.
"""

from __future__ import annotations

import ufl

from rdgraph.problem.expressions import Expression

__all__ = ["UFL_FUNCTIONS", "to_ufl"]

#: The UFL function for each name of :data:`rdgraph.problem.expressions.FUNCTIONS`.
UFL_FUNCTIONS = {"sin": ufl.sin, "cos": ufl.cos, "tan": ufl.tan, "exp": ufl.exp, "log": ufl.ln,
                 "sqrt": ufl.sqrt, "tanh": ufl.tanh, "abs": abs}


def to_ufl(expression: Expression, x, g=None, t=None, data=None):
    """The expression in UFL.

    Args:
        expression: A parsed expression.
        x: The mesh's ``ufl.SpatialCoordinate`` (anything indexable by ``0..2``).
        g: The vertex index: a UFL object (e.g. a ``fem.Constant``) or a number.
        t: The time: a UFL object or a number.
        data: For a UFL ``g``: the UFL object of each data column ``name[g]`` it uses.

    Returns:
        A UFL expression, or a float when the expression is a plain number.

    Raises:
        InputError: The expression uses ``g`` or ``t`` and no value was given.
    """
    return expression.substitute(x, g, t, functions=UFL_FUNCTIONS.__getitem__, data=data)
