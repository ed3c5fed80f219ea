"""The C backend's policy: SIMD lanes, chunked C files, vector libm, inlining.

Everything here is a decision about C code that no other backend shares:
which kernels run their batch loop across SIMD lanes (a cost rule, measured
by ``benchmarks/lanes.py``), how a lane body spells an argument element
(a printer setting, not a rewrite of printed text), which libm functions
have vector versions in glibc's libmvec, and which bodies are too big to
inline into their drivers or to keep in one C file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .backend import Backend
from .simplify import count_operations, needs_chunks

__all__ = ["INLINE_OPERATIONS", "LANE_OPERATIONS_PER_ELEMENT", "LIBM_CALL_COST", "VECTOR_LIBM", "CBackend",
           "runs_in_lanes"]

# Bodies with more operations than this are compiled once, not inlined into
# each driver: compile time matters more than an indirect store there.
INLINE_OPERATIONS = 4000
# libm functions with vector versions in glibc's libmvec on x86-64:
# name -> (arity, added in glibc 2.35); the others came with 2.22.
VECTOR_LIBM = {
    **{name: (1, False) for name in ("exp", "log", "sin", "cos")}, "pow": (2, False),
    **{name: (1, True) for name in ("tan", "tanh", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh",
                                    "atanh", "exp2", "expm1", "log2", "log10", "log1p", "cbrt", "erf", "erfc")},
    "atan2": (2, True), "hypot": (2, True),
}
# A C call in printed text: the printer's output is what the compiler sees,
# so the functions a body calls are read from it.
_CALL = re.compile(r"\b([a-z][a-z0-9]*)\(")
# Kernels computing at least this many operations per element they read or
# store run their batch loop in SIMD lanes (see runs_in_lanes).
LANE_OPERATIONS_PER_ELEMENT = 4
LIBM_CALL_COST = 20  # a scalar exp or tanh takes about as long as 20 multiplications


def runs_in_lanes(program, argument_elements: int) -> bool:
    """Whether the batch loop of ``program`` runs across SIMD lanes: when it
    computes enough per element it moves. A lane block transposes each
    point's arguments in and its values out (about a load and a store per
    element), which a cheap body does not win back: Robertson's Jacobian does
    about one operation per element and is bound by memory either way,
    a tanh MLP's does dozens. A libm call counts as ``LIBM_CALL_COST``
    operations (see benchmarks/lanes.py)."""
    stored = sum(len(buffer.positions) for buffer in program.buffers)
    exprs = [expr for _, expr in program.temporaries] + [expr for _, _, expr in program.results]
    cost = count_operations(exprs, call_cost=LIBM_CALL_COST)
    return cost >= LANE_OPERATIONS_PER_ELEMENT * (stored + argument_elements)


@dataclass(frozen=True)
class CBackend(Backend):
    """C point bodies and batch drivers (templates/_kernels.c.j2)."""

    def lanes(self, program, argument_elements: int) -> bool:
        return runs_in_lanes(program, argument_elements)

    def lane_element(self, name: str, index: tuple[int, ...]) -> str:
        """``W[1][0]`` of lane ``_l``: ``W[1][0][_l]`` (arguments are blocks of lanes)."""
        return self.element(name, index) + "[_l]"

    def chunked(self, program) -> bool:
        return needs_chunks(program)

    def inline(self, operations: int) -> bool:
        return operations <= INLINE_OPERATIONS

    def vector_functions(self, kernels) -> tuple[tuple[str, int, bool], ...]:
        called = set()
        for kernel in kernels:
            if kernel.lanes:
                texts = [text for _, text in kernel.temporaries] + [result[3] for result in kernel.results]
                if kernel.chunks:
                    texts += [line.text for _, statements in kernel.chunks.functions for line in statements]
                for text in texts:
                    called.update(_CALL.findall(text))
        return tuple((name, *VECTOR_LIBM[name]) for name in sorted(called & VECTOR_LIBM.keys()))
