"""Stage 2, derive: traced programs become derivatives.

Takes a :class:`~symjac.front.trace.Traced`; gives a
:class:`~symjac.derive.diff.Derivative` to ``emit``. Forward mode (``diff``),
reverse mode (``reverse``), the derivative transforms (``derivatives``) and
the kernel kinds that say which buffers a kernel writes (``kinds``). Imports
only ``front``.
"""
