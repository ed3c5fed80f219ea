"""The backend protocol: what ``render`` asks of a way to print programs.

A backend names its expression printer and templates, says what its source
is (``suffix``: how ``build`` loads it) and decides the policies that only
make sense for its target language. This base class is a backend with no
such policy (pure Python: every kernel evaluates a whole batch at once with
array operations); :class:`~symjac.emit.c_backend.CBackend` adds SIMD lanes,
chunked C files, libm vector functions and inlining. The registry of
backends is ``emit/backends.py``.

``form`` says which program a backend prints: ``"scalar"`` backends print
the straight-line programs of ``simplify`` (one expression per element),
``"array"`` backends print array programs (see the array form).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PARALLEL_MIN_OPERATIONS", "Backend"]

# A batch is split across threads only when it holds at least this many
# operations in total (about 20-40 us of work per thread).
PARALLEL_MIN_OPERATIONS = 50_000


@dataclass(frozen=True)
class Backend:
    name: str
    template: str  # the standalone module's template, in templates/
    suffix: str  # of that module's file: ".pyx" (a Cython extension) or ".py"
    printer: type  # expression printer (printing.py)
    element: Callable[[str, tuple[int, ...]], str]  # argument name, element index -> text
    compiled: bool  # its modules need a C compiler
    # For the Python API (not standalone): a kernel library template, whose
    # sources build loads with the shared kernel runtime (None: the module).
    library_template: str | None = None
    # NONZEROS are read from the module's C tables: big Python literals are
    # slow for Cython and the C compiler.
    c_tables: bool = False
    form: str = "scalar"

    def lanes(self, program, argument_elements: int) -> bool:
        """Whether the batch loop of ``program`` runs across SIMD lanes."""
        return False

    def lane_element(self, name: str, index: tuple[int, ...]) -> str:
        """An argument element as a lane body reads it (only for backends with lanes)."""
        raise NotImplementedError(f"the {self.name} backend has no SIMD lanes")

    def chunked(self, program) -> bool:
        """Whether ``program`` is printed as chunk functions in separate files."""
        return False

    def inline(self, operations: int) -> bool:
        """Whether a point body is inlined into its drivers."""
        return True

    def vector_functions(self, kernels) -> tuple[tuple[str, int, bool], ...]:
        """Vector versions of libm functions the kernels call (name, arity, newer glibc)."""
        return ()

    def parallel_min_points(self, operations: int) -> int:
        """Batches smaller than this run on one thread (threads cost more than they save)."""
        return max(1, -(-PARALLEL_MIN_OPERATIONS // max(operations, 1)))
