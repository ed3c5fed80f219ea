"""Stage 1, the front: a user's numpy-style function becomes a traced program.

Takes a Python function and argument shapes; gives a
:class:`~symjac.front.trace.Traced` (sympy expressions per output element) to
``derive``. Holds the tracer type and its rule tables (``tracer``, ``ops``,
``einsum``), name validation (``names``) and model specs (``spec``). Imports
nothing from a later stage.
"""
