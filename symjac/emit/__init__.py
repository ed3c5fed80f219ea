"""Stage 3, emit: derivatives become source text.

Takes a :class:`~symjac.derive.diff.Derivative`; simplifies each kernel into a
straight-line program (``simplify``: CSE, sparsity, chunks), prints
expressions (``printing``) and renders the templates of the backend
(``backends``, ``render``) into a :class:`~symjac.emit.source.Source` for
``build``. Imports only ``front`` and ``derive``.
"""
