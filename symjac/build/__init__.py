"""Stage 4, build: source text becomes a loaded module.

Takes a :class:`~symjac.emit.source.Source` and build options; compiles C
(``toolchain``), caches what it built and rendered under content-hash keys
(``cache``, ``sources``) and loads the module (``builder``) for ``run``.
Imports only the stages before it.
"""
