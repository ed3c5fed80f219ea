"""Printing array programs as numpy or torch modules (the array form's emit stage).

Fed an :class:`~symjac.front.array_program.ArrayProgram` (usually from
:func:`symjac.derive.array_calculus.derive`); its text goes to
:func:`load_module` (or to a file, by the codegen command).

All expression text comes from :class:`ArrayPrinter` methods, one
``_print_<prim>`` per primitive; the Jinja template
``templates/array_module.py.j2`` only places already-printed lines. Every
value may carry leading batch dimensions, so the printers address core axes
from the right (negative axes, ``x[..., None, :]`` alignment, ``...``
einsums) and contractions become ``matmul``\\ s that broadcast over the batch.
A two-operand einsum is printed as a transpose/reshape + matmul: BLAS does the
work and there is no runtime path search (the order was fixed at build time).

Targets: "numpy" (imports numpy only) and "torch" (plain torch ops, no copy
to numpy, constants made with the arguments' dtype and device, so float32
stays float32, it runs on any device, autograd and torch.compile see ordinary
operations).
"""

from __future__ import annotations

import base64
import hashlib
import linecache
import math
import re
import sys
import types
from dataclasses import dataclass

import numpy as np

from ..front.array_program import LINALG, ArrayProgram, Eqn, Var
from ..errors import InvalidNameError
from ..front.names import check_identifier
from .source import environment

__all__ = ["ArrayPrinter", "TARGETS", "load_module", "print_module", "scalar_cost"]

TARGETS = ("numpy", "torch")
_MODULE_NAMES = frozenset({"torch", "base64", "kernel"})  # besides symjac.names.RESERVED
_TITLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 \-]{0,79}")


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

_NUMPY_HELPERS = '''\
def _unbatched(x, rank):
    """x without leading batch dimensions of 1 (the call convention gives every
    argument one): numpy multiplies stacks matrix by matrix, one BLAS call each."""
    if x.ndim > rank and all(d == 1 for d in x.shape[:x.ndim - rank]):
        return x.reshape(x.shape[x.ndim - rank:])
    return x


def _matmul(a, b):
    """a (..., m, k) @ b (..., k, n) as ONE GEMM when one side has no batch dimensions."""
    a, b = _unbatched(a, 2), _unbatched(b, 2)
    if a.ndim == 2 and b.ndim > 2:  # (bᵀ aᵀ)ᵀ: b's batch joins the rows, no copy when bᵀ is contiguous
        return numpy.swapaxes(_matmul(numpy.swapaxes(b, -1, -2), a.T), -1, -2)
    if b.ndim == 2 and a.ndim > 2:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
    return a @ b


def _matvec(a, x):
    """a (..., m, n) times x (..., n): one GEMM over the batch when a has no batch."""
    a = _unbatched(a, 2)
    if a.ndim == 2:
        return x @ a.T
    return (a @ x[..., None])[..., 0]


def _vecmat(x, a):
    """x (..., n) times a (..., n, m)."""
    a = _unbatched(a, 2)
    if a.ndim == 2:
        return x @ a
    return (x[..., None, :] @ a)[..., 0, :]


def _diag_embed(x):
    """(..., k) -> (..., k, k) with x on the diagonal."""
    out = numpy.zeros(x.shape + x.shape[-1:], dtype=x.dtype)
    numpy.einsum("...ii->...i", out)[...] = x
    return out


def _extremum_mask(x, axes, largest):
    """One-hot (as float) of the first maximum (minimum) over the core axes, like numpy.argmax."""
    moved = numpy.moveaxis(x, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
    index = flat.argmax(axis=-1) if largest else flat.argmin(axis=-1)
    mask = (numpy.arange(flat.shape[-1]) == index[..., None]).astype(x.dtype)
    return numpy.moveaxis(mask.reshape(moved.shape), tuple(range(-len(axes), 0)), axes)


def _concat(parts, rank, axis):
    """Concatenate along a core axis, broadcasting the batch dimensions first."""
    batch = numpy.broadcast_shapes(*(p.shape[:p.ndim - rank] for p in parts))
    return numpy.concatenate([numpy.broadcast_to(p, batch + p.shape[p.ndim - rank:]) for p in parts], axis=axis)


def _solve(a, b):
    """numpy.linalg.solve with b a stack of matrices (never read as a vector), stacks broadcast."""
    batch = numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return numpy.linalg.solve(numpy.broadcast_to(a, batch + a.shape[-2:]), numpy.broadcast_to(b, batch + b.shape[-2:]))


def _eig(a):
    """numpy.linalg.eig of real matrices whose eigenvalues are all real (symjac is real-valued)."""
    values, vectors = numpy.linalg.eig(a)
    if numpy.iscomplexobj(values):
        raise ValueError("np.linalg.eig: the matrix has complex eigenvalues; symjac's functions are "
                         "real-valued (np.linalg.eigh for symmetric matrices has real ones)")
    return values, vectors


def _out(x, shape):
    """x with the full batch shape in front (a fresh array where broadcasting was needed)."""
    if x.shape != shape:
        x = numpy.broadcast_to(x, shape).copy()
    return x'''

_TORCH_HELPERS = '''\
def _matmul(a, b):
    """a (..., m, k) @ b (..., k, n) as ONE GEMM when one side has no batch dimensions."""
    if a.ndim == 2 and b.ndim > 2:  # (bᵀ aᵀ)ᵀ: b's batch joins the rows, no copy when bᵀ is contiguous
        return _matmul(b.mT, a.mT).mT
    if b.ndim == 2 and a.ndim > 2:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
    return a @ b


def _matvec(a, x):
    """a (..., m, n) times x (..., n): one GEMM over the batch when a has no batch."""
    if a.ndim == 2:
        return x @ a.transpose(-1, -2)
    return (a @ x[..., None])[..., 0]


def _vecmat(x, a):
    """x (..., n) times a (..., n, m)."""
    if a.ndim == 2:
        return x @ a
    return (x[..., None, :] @ a)[..., 0, :]


def _extremum_mask(x, axes, largest):
    """One-hot (as x's dtype) of the first maximum (minimum) over the core axes, like numpy.argmax."""
    moved = torch.movedim(x, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
    index = torch.argmax(flat, dim=-1) if largest else torch.argmin(flat, dim=-1)
    mask = (torch.arange(flat.shape[-1], device=x.device) == index[..., None]).to(x.dtype)
    return torch.movedim(mask.reshape(moved.shape), tuple(range(-len(axes), 0)), axes)


def _concat(parts, rank, axis):
    """Concatenate along a core axis, broadcasting the batch dimensions first."""
    batch = torch.broadcast_shapes(*(p.shape[:p.ndim - rank] for p in parts))
    return torch.cat([p.expand(batch + p.shape[p.ndim - rank:]) for p in parts], dim=axis)


def _solve(a, b):
    """torch.linalg.solve with b a stack of matrices (never read as a vector), stacks broadcast."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return torch.linalg.solve(a.expand(batch + a.shape[-2:]), b.expand(batch + b.shape[-2:]))


def _eig(a):
    """torch.linalg.eig of real matrices whose eigenvalues are all real (symjac is real-valued)."""
    values, vectors = torch.linalg.eig(a)
    if not values.is_meta and bool((values.imag != 0).any()):  # on a GPU, this check waits for the result
        raise ValueError("np.linalg.eig: the matrix has complex eigenvalues; symjac's functions are "
                         "real-valued (np.linalg.eigh for symmetric matrices has real ones)")
    return values.real, vectors.real


def _broadcast(*shapes):
    """torch.broadcast_shapes (slow: many checks in Python) where the batch shapes differ other than by length."""
    longest = torch.Size()
    for shape in shapes:  # not max(key=len): torch.compile traces this
        if len(shape) > len(longest):
            longest = shape
    if all(shape == longest[len(longest) - len(shape):] for shape in shapes):
        return longest
    return torch.broadcast_shapes(*shapes)


def _out(x, shape):
    """x with the full batch shape in front."""
    if x.shape != shape:
        x = x.expand(shape)
    return x'''

_NUMPY_FUNCTIONS = {
    "sqrt": "numpy.sqrt", "cbrt": "numpy.cbrt", "square": "numpy.square", "exp": "numpy.exp",
    "exp2": "numpy.exp2", "expm1": "numpy.expm1", "log": "numpy.log", "log2": "numpy.log2",
    "log10": "numpy.log10", "log1p": "numpy.log1p", "logaddexp": "numpy.logaddexp", "sin": "numpy.sin",
    "cos": "numpy.cos", "tan": "numpy.tan", "arcsin": "numpy.arcsin", "arccos": "numpy.arccos",
    "arctan": "numpy.arctan", "arctan2": "numpy.arctan2", "hypot": "numpy.hypot", "sinh": "numpy.sinh",
    "cosh": "numpy.cosh", "tanh": "numpy.tanh", "arcsinh": "numpy.arcsinh", "arccosh": "numpy.arccosh",
    "arctanh": "numpy.arctanh", "abs": "numpy.abs", "sign": "numpy.sign", "maximum": "numpy.maximum",
    "minimum": "numpy.minimum", "heaviside": "numpy.heaviside", "where": "numpy.where",
    "and": "numpy.logical_and", "or": "numpy.logical_or", "xor": "numpy.logical_xor", "not": "numpy.logical_not",
}
_TORCH_FUNCTIONS = {
    "sqrt": "torch.sqrt", "square": "torch.square", "exp": "torch.exp", "exp2": "torch.exp2",
    "expm1": "torch.expm1", "log": "torch.log", "log2": "torch.log2", "log10": "torch.log10",
    "log1p": "torch.log1p", "logaddexp": "torch.logaddexp", "sin": "torch.sin", "cos": "torch.cos",
    "tan": "torch.tan", "arcsin": "torch.asin", "arccos": "torch.acos", "arctan": "torch.atan",
    "arctan2": "torch.atan2", "hypot": "torch.hypot", "sinh": "torch.sinh", "cosh": "torch.cosh",
    "tanh": "torch.tanh", "arcsinh": "torch.asinh", "arccosh": "torch.acosh", "arctanh": "torch.atanh",
    "abs": "torch.abs", "sign": "torch.sign", "heaviside": "torch.heaviside",
    "and": "torch.logical_and", "or": "torch.logical_or", "xor": "torch.logical_xor", "not": "torch.logical_not",
}
_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**",
              "gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}


def _float(value: float) -> str:
    if math.isnan(value):
        return "float('nan')"
    if math.isinf(value):
        return "float('inf')" if value > 0 else "(-float('inf'))"
    text = repr(float(value))
    return f"({text})" if value < 0 else text


def _tuple(items) -> str:
    items = [str(i) for i in items]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


@dataclass(frozen=True)
class ModuleContext:
    title: str
    function: str
    version: str
    target: str
    content_hash: str
    arguments: tuple
    returns: str
    imports: tuple
    constants: tuple
    helpers: tuple
    checks: tuple
    prologue: tuple
    body: tuple
    result: str


class ArrayPrinter:
    """Prints each equation of an ArrayProgram as one line of numpy or torch code."""

    def __init__(self, program: ArrayProgram, target: str) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.program = program
        self.target = target
        self.np = target == "numpy"
        self.literals: dict[str, float] = {}
        self.constants: list[tuple[str, str]] = []
        self.needs_base64 = False

    # -- operands ----------------------------------------------------------
    def ref(self, var: Var) -> str:
        if var.name in self.literals:
            return _float(self.literals[var.name])
        return var.name

    def aligned(self, var: Var, rank: int) -> str:
        """``var`` with its core axes lined up with an operand of core rank ``rank``."""
        text = self.ref(var)
        if var.name in self.literals or var.ndim == rank:
            return text
        return f"{text}[{', '.join(['...'] + ['None'] * (rank - var.ndim) + [':'] * var.ndim)}]"

    # -- equations -----------------------------------------------------------
    def line(self, eqn: Eqn):
        """(text, comment) for ``eqn``, or None when it is inlined (literals)."""
        if eqn.prim == "literal":
            self.literals[eqn.out.name] = eqn.param("value")
            return None
        method = getattr(self, f"_print_{eqn.prim}", None)
        if method is None:
            method = self._print_elementwise
        self._pre, self._eqn = [], eqn
        text = method(eqn)
        shape = ", ".join(map(str, eqn.out.shape))
        return self._pre + [(f"{eqn.out.name} = {text}", f"{self._describe(eqn)} [{shape}]")]

    def _tmp(self, text: str, comment: str) -> str:
        """Name a step of a multi-step line (``_t7_0``, ...), so every line stays short."""
        if text.isidentifier():
            return text
        name = f"{self._eqn.out.name}_{len(self._pre)}"
        self._pre.append((f"{name} = {text}", comment))
        return name

    def _describe(self, eqn: Eqn) -> str:
        if eqn.prim == "einsum":
            return "einsum " + self._subscripts(eqn, ellipsis=False)
        if eqn.prim in ("sum", "amax", "amin"):
            return f"{eqn.prim} over axes {eqn.param('axes')}"
        return eqn.prim

    def _print_elementwise(self, eqn: Eqn) -> str:
        prim, ins, rank = eqn.prim, eqn.inputs, eqn.out.ndim
        args = [self.aligned(v, rank) for v in ins]
        if prim in _OPERATORS:
            return f"{args[0]} {_OPERATORS[prim]} {args[1]}"
        if prim == "neg":
            return f"-{args[0]}"
        if prim == "reciprocal":
            return f"1.0 / {args[0]}"
        if prim == "cast":
            return f"{args[0]}.astype(_dtype)" if self.np else f"{args[0]}.to(_dtype)"
        if self.np:
            return f"{_NUMPY_FUNCTIONS[prim]}({', '.join(args)})"
        # torch
        if prim in ("maximum", "minimum"):
            op = ">=" if prim == "maximum" else "<="
            return f"torch.where({args[0]} {op} {args[1]}, {args[0]}, {args[1]})"
        if prim == "where":
            if all(v.name in self.literals for v in ins[1:]):
                args[1] = f"torch.full({args[0]}.shape, {args[1]}, dtype=_dtype, device=_device)"
            return f"torch.where({', '.join(args)})"
        if prim == "cbrt":
            return f"torch.sign({args[0]}) * torch.abs({args[0]}) ** (1.0 / 3.0)"
        if len(ins) == 2:
            tensor = args[1] if ins[0].name in self.literals else args[0]
            args = [f"torch.full_like({tensor}, {a})" if v.name in self.literals else a for v, a in zip(ins, args)]
        return f"{_TORCH_FUNCTIONS[prim]}({', '.join(args)})"

    def _print_constant(self, eqn: Eqn) -> str:
        """Captured arrays live at module level (exact: repr of floats, or the raw
        little-endian bytes in base64 when large) and are cast per call."""
        data = eqn.param("data")
        name = f"_C{len(self.constants)}"
        array = data.array()
        boolean = data.dtype == "b"
        numpy_kind, torch_kind = ("bool", "torch.bool") if boolean else ("numpy.float64", "torch.float64")
        if array.size <= 16:
            module, kind = ("numpy.array", numpy_kind) if self.np else ("torch.tensor", torch_kind)
            text = f"{module}({array.tolist()!r}, dtype={kind})"
        else:
            self.needs_base64 = True
            layout = "|b1" if boolean else "<f8"
            raw = base64.b64encode(np.ascontiguousarray(array, dtype=layout).tobytes()).decode()
            rows = "".join(f'\n    b"{raw[k:k + 96]}"' for k in range(0, len(raw), 96))
            if self.np:
                text = f'numpy.frombuffer(base64.b64decode({rows}\n), dtype="{layout}")'
            else:
                text = f'torch.frombuffer(bytearray(base64.b64decode({rows}\n)), dtype={torch_kind})'
            text += f".reshape({_tuple(array.shape)})"
        self.constants.append((name, text))
        if boolean:
            return name if self.np else f"{name}.to(device=_device)"
        return f"numpy.asarray({name}, dtype=_dtype)" if self.np else f"{name}.to(dtype=_dtype, device=_device)"

    def _print_eye(self, eqn: Eqn) -> str:
        n = eqn.param("n")
        return f"numpy.eye({n}, dtype=_dtype)" if self.np else f"torch.eye({n}, dtype=_dtype, device=_device)"

    def _print_zeros(self, eqn: Eqn) -> str:
        shape = _tuple(eqn.param("shape"))
        return f"numpy.zeros({shape}, dtype=_dtype)" if self.np else \
            f"torch.zeros({shape}, dtype=_dtype, device=_device)"

    def _axes(self, eqn: Eqn, axes) -> str:
        rank = eqn.inputs[0].ndim
        return _tuple(a - rank for a in axes)

    def _print_sum(self, eqn: Eqn) -> str:
        x, keep = self.ref(eqn.inputs[0]), eqn.param("keepdims")
        axes = self._axes(eqn, eqn.param("axes"))
        if self.np:
            return f"{x}.sum(axis={axes}{', keepdims=True' if keep else ''})"
        return f"{x}.sum(dim={axes}{', keepdim=True' if keep else ''})"

    def _print_amax(self, eqn: Eqn, name="amax") -> str:
        x, keep = self.ref(eqn.inputs[0]), eqn.param("keepdims")
        axes = self._axes(eqn, eqn.param("axes"))
        if self.np:
            return f"numpy.{name}({x}, axis={axes}{', keepdims=True' if keep else ''})"
        return f"torch.{name}({x}, dim={axes}{', keepdim=True' if keep else ''})"

    def _print_amin(self, eqn: Eqn) -> str:
        return self._print_amax(eqn, "amin")

    def _print_argmax_mask(self, eqn: Eqn, largest=True) -> str:
        return f"_extremum_mask({self.ref(eqn.inputs[0])}, {self._axes(eqn, eqn.param('axes'))}, {largest})"

    def _print_argmin_mask(self, eqn: Eqn) -> str:
        return self._print_argmax_mask(eqn, False)

    def _print_reshape(self, eqn: Eqn) -> str:
        x, rank = self.ref(eqn.inputs[0]), eqn.inputs[0].ndim
        batch = f"{x}.shape[:{x}.ndim - {rank}]" if rank else f"{x}.shape"
        return f"{x}.reshape({batch} + {_tuple(eqn.param('shape'))})"

    def _permute(self, x: str, perm, rank: int) -> str:
        perm = tuple(perm)
        if perm == tuple(range(rank)):
            return x
        if rank >= 2 and perm == tuple(range(rank - 2)) + (rank - 1, rank - 2):
            return f"{x}.swapaxes(-1, -2)" if self.np else f"{x}.transpose(-1, -2)"
        source = _tuple(p - rank for p in perm)
        destination = _tuple(q - rank for q in range(rank))
        return f"numpy.moveaxis({x}, {source}, {destination})" if self.np else \
            f"torch.movedim({x}, {source}, {destination})"

    def _print_transpose(self, eqn: Eqn) -> str:
        return self._permute(self.ref(eqn.inputs[0]), eqn.param("perm"), eqn.inputs[0].ndim)

    def _print_broadcast(self, eqn: Eqn) -> str:
        x, shape, rank = eqn.inputs[0], eqn.param("shape"), eqn.out.ndim
        if x.name in self.literals:
            value = _float(self.literals[x.name])
            return f"numpy.full({_tuple(shape)}, {value}, dtype=_dtype)" if self.np else \
                f"torch.full({_tuple(shape)}, {value}, dtype=_dtype, device=_device)"
        text = self.aligned(x, rank)
        target = f"{text}.shape[:{text}.ndim - {rank}] + {_tuple(shape)}" if rank else f"{text}.shape"
        return f"numpy.broadcast_to({text}, {target})" if self.np else f"{text}.expand({target})"

    def _print_getitem(self, eqn: Eqn) -> str:
        parts = ["..."]
        for entry in eqn.param("index"):
            if entry[0] == "n":
                parts.append("None")
            elif entry[0] == "i":
                parts.append(str(entry[1]))
            else:
                _, start, stop, step = entry
                text = f"{start if start else ''}:{stop}" + (f":{step}" if step != 1 else "")
                parts.append(text)
        return f"{self.ref(eqn.inputs[0])}[{', '.join(parts)}]"

    def _print_concat(self, eqn: Eqn) -> str:
        rank = eqn.out.ndim
        parts = ", ".join(self.ref(v) for v in eqn.inputs)
        return f"_concat([{parts}], {rank}, {eqn.param('axis') - rank})"

    def _print_diag_embed(self, eqn: Eqn) -> str:
        x = self.ref(eqn.inputs[0])
        return f"_diag_embed({x})" if self.np else f"torch.diag_embed({x})"

    # -- linear algebra: numpy.linalg / torch.linalg at run time ------------------
    def _linalg_call(self, name: str, eqn: Eqn, suffix: str = "") -> str:
        module = "numpy.linalg" if self.np else "torch.linalg"
        return f"{module}.{name}({', '.join(self.ref(v) for v in eqn.inputs)}){suffix}"

    def _print_inv(self, eqn: Eqn) -> str:
        return self._linalg_call("inv", eqn)

    def _print_solve(self, eqn: Eqn) -> str:
        return f"_solve({self.ref(eqn.inputs[0])}, {self.ref(eqn.inputs[1])})"

    def _print_det(self, eqn: Eqn) -> str:
        return self._linalg_call("det", eqn)

    def _print_slogdet(self, eqn: Eqn) -> str:
        return self._linalg_call("slogdet", eqn, "[1]")

    def _print_slogdet_sign(self, eqn: Eqn) -> str:
        return self._linalg_call("slogdet", eqn, "[0]")

    def _print_cholesky(self, eqn: Eqn) -> str:
        return self._linalg_call("cholesky", eqn)

    def _print_eigh_values(self, eqn: Eqn) -> str:
        return self._linalg_call("eigvalsh", eqn)

    def _print_eigh_vectors(self, eqn: Eqn) -> str:
        return self._linalg_call("eigh", eqn, "[1]")

    def _print_eig_values(self, eqn: Eqn) -> str:
        return f"_eig({self.ref(eqn.inputs[0])})[0]"

    def _print_eig_vectors(self, eqn: Eqn) -> str:
        return f"_eig({self.ref(eqn.inputs[0])})[1]"

    def _print_svd_values(self, eqn: Eqn) -> str:
        x = self.ref(eqn.inputs[0])
        return f"numpy.linalg.svd({x}, compute_uv=False)" if self.np else f"torch.linalg.svdvals({x})"

    def _svd(self, eqn: Eqn, full: bool, part: int) -> str:
        module = "numpy.linalg" if self.np else "torch.linalg"
        return f"{module}.svd({self.ref(eqn.inputs[0])}, full_matrices={full})[{part}]"

    def _print_svd_u(self, eqn: Eqn) -> str:
        return self._svd(eqn, False, 0)

    def _print_svd_vh(self, eqn: Eqn) -> str:
        return self._svd(eqn, False, 2)

    def _print_svd_u_full(self, eqn: Eqn) -> str:
        return self._svd(eqn, True, 0)

    def _print_svd_vh_full(self, eqn: Eqn) -> str:
        return self._svd(eqn, True, 2)

    def _print_pinv(self, eqn: Eqn) -> str:
        x, rcond = self.ref(eqn.inputs[0]), _float(eqn.param("rcond"))  # relative to the largest singular value
        return f"numpy.linalg.pinv({x}, rcond={rcond})" if self.np else f"torch.linalg.pinv({x}, rtol={rcond})"

    def _subscripts(self, eqn: Eqn, ellipsis=True) -> str:
        spec_in, spec_out = eqn.param("spec")
        dots = "..." if ellipsis else ""
        return ",".join(dots + "".join(_LETTERS[l] for l in ls) for ls in spec_in) + "->" + dots + \
            "".join(_LETTERS[l] for l in spec_out)

    def _print_einsum(self, eqn: Eqn) -> str:
        spec_in, spec_out = eqn.param("spec")
        if len(eqn.inputs) == 1 or any(len(set(ls)) != len(ls) for ls in spec_in):
            module = "numpy" if self.np else "torch"
            args = ", ".join(self.ref(v) for v in eqn.inputs)
            return f'{module}.einsum("{self._subscripts(eqn)}", {args})'
        return self._pairwise(eqn)

    def _pairwise(self, eqn: Eqn) -> str:
        """Two operands as a broadcast product or a (batched) matmul."""
        (a, b), ((la, lb), lo) = eqn.inputs, eqn.param("spec")
        sizes = {}
        for var, ls in ((a, la), (b, lb)):
            sizes.update(zip(ls, var.shape))
        ta, tb = self.ref(a), self.ref(b)
        contracted = [l for l in la if l in lb and l not in lo]
        if not contracted:  # a broadcast product
            outer = None if self.np else self._outer(ta, la, tb, lb, lo, sizes)
            return outer or f"{self._placed(ta, la, lo)} * {self._placed(tb, lb, lo)}"
        batch = [l for l in lo if l in la and l in lb]
        free_a = [l for l in la if l not in lb]
        free_b = [l for l in lb if l not in la]
        left = self._permute(ta, [la.index(l) for l in batch + free_a + contracted], len(la))
        right = self._permute(tb, [lb.index(l) for l in batch + contracted + free_b], len(lb))
        if not free_a and not free_b:  # inner products over the contracted axes
            axes = _tuple(range(-len(contracted), 0))
            keyword = "axis" if self.np else "dim"
            product = f"({left} * {right}).sum({keyword}={axes})"
            result_labels = batch
        elif not batch and (not free_a or not free_b):  # a matrix and a vector, axes merged where needed
            def merged(text, labels, groups):
                if all(len(g) <= 1 for g in groups):
                    return text
                return self._reshape_core(self._tmp(text, "operand"), len(labels),
                                          [math.prod(sizes[l] for l in g) for g in groups if g])

            matrix = free_a or free_b
            left = merged(left, la, (free_a, contracted))
            right = merged(right, lb, (contracted, free_b))
            product = f"_matvec({left}, {right})" if free_a else f"_vecmat({left}, {right})"
            if len(matrix) > 1:
                product = self._reshape_core(self._tmp(product, "matrix-vector product"), 1, [sizes[l] for l in matrix])
            result_labels = matrix
        else:  # (..., batch, m, k) @ (..., batch, k, n), merging or adding axes where needed
            def prod(labels):
                return math.prod(sizes[l] for l in labels)

            kept = [sizes[l] for l in batch]
            if len(free_a) != 1 or len(contracted) != 1:
                left = self._reshape_core(self._tmp(left, "left operand"), len(la),
                                          kept + [prod(free_a), prod(contracted)])
            if len(free_b) != 1 or len(contracted) != 1:
                right = self._reshape_core(self._tmp(right, "right operand"), len(lb),
                                           kept + [prod(contracted), prod(free_b)])
            product = f"_matmul({left}, {right})"
            if len(free_a) != 1 or len(free_b) != 1:
                product = self._reshape_core(self._tmp(product, "matmul"), len(batch) + 2,
                                             kept + [sizes[l] for l in free_a + free_b])
            result_labels = batch + free_a + free_b
        perm = [result_labels.index(l) for l in lo]
        if perm == list(range(len(lo))):
            return product
        return self._permute(self._wrap(product), perm, len(lo))

    def _outer(self, ta, la, tb, lb, lo, sizes):
        """Torch: outer products (per shared index) as a matmul with an inner axis of
        1, whose backward is two matmuls where a broadcast product's is a product of
        the result's size and a sum per operand; None where ``lo`` is not laid out
        (shared, one operand's own, the other's)."""
        shared = [l for l in lo if l in la and l in lb]
        own_a = [l for l in la if l not in lb]
        own_b = [l for l in lb if l not in la]
        if not own_a or not own_b:
            return None
        a, b = (ta, la, own_a), (tb, lb, own_b)
        for (tx, lx, own_x), (ty, ly, own_y) in ((a, b), (b, a)):
            if list(lo) == shared + own_x + own_y:
                break
        else:
            return None
        core = [sizes[l] for l in shared]
        left = self._permute(tx, [lx.index(l) for l in shared + own_x], len(lx))
        left = f"{self._wrap(left)}[..., None]" if len(own_x) == 1 else self._reshape_core(
            self._tmp(left, "left operand"), len(lx), core + [math.prod(sizes[l] for l in own_x), 1])
        right = self._permute(ty, [ly.index(l) for l in shared + own_y], len(ly))
        right = f"{self._wrap(right)}[..., None, :]" if len(own_y) == 1 else self._reshape_core(
            self._tmp(right, "right operand"), len(ly), core + [1, math.prod(sizes[l] for l in own_y)])
        product = f"_matmul({left}, {right})"
        if len(own_x) == 1 and len(own_y) == 1:
            return product
        return self._reshape_core(self._tmp(product, "outer products"), len(shared) + 2, [sizes[l] for l in lo])

    def _reshape_core(self, text: str, rank: int, core) -> str:
        """``text`` (core rank ``rank``) reshaped to core shape ``core``, batch kept."""
        batch = f"{text}.shape[:{text}.ndim - {rank}]" if rank else f"{text}.shape"
        return f"{text}.reshape({batch} + {_tuple(core)})"

    @staticmethod
    def _wrap(text: str) -> str:
        return text if text.isidentifier() else f"({text})"

    def _placed(self, text: str, labels, out) -> str:
        """An operand permuted into the order of ``out`` with None where it has no axis.
        A permuted operand is copied first (at most the result's size, usually a
        weight matrix): numpy and torch lay a product out like its operands'
        strides, so ``W.T * s[..., None, :]`` would come out transposed and the
        GEMM that reads it copy the whole batch instead."""
        order = [l for l in out if l in labels]
        perm = [labels.index(l) for l in order]
        text = self._permute(text, perm, len(labels))
        if perm != sorted(perm):
            text = f"numpy.ascontiguousarray({text})" if self.np else f"{self._wrap(text)}.contiguous()"
        if len(order) == len(out):
            return text
        index = ", ".join(["..."] + [":" if l in labels else "None" for l in out])
        return f"{self._wrap(text)}[{index}]"

    # -- the module -------------------------------------------------------------
    def render(self, title: str) -> str:
        program = self.program
        names = [check_identifier(v.name, "argument name") for v in program.inputs]
        for name in names:
            if name in _MODULE_NAMES:
                raise InvalidNameError(f"argument name {name!r} is a name the generated array module uses; rename it")
        body = []
        for eqn in program.eqns:
            printed = self.line(eqn)
            if printed is not None:
                body += printed
        np_ = self.np
        checks = []
        for var in program.inputs:
            core = f"{var.name}.shape[{var.name}.ndim - {var.ndim}:]" if var.ndim else "()"
            if np_:
                checks.append(f"{var.name} = numpy.asarray({var.name})")
            if var.ndim:
                checks.append(f"if {var.name}.ndim < {var.ndim} or {core} != {_tuple(var.shape)}:")
                checks.append(f"    raise ValueError(f\"argument {var.name} must have shape {_tuple(var.shape)} "
                              f"after any batch dimensions, got {{tuple({var.name}.shape)}}\")")
        batch_parts = [f"{v.name}.shape[:{v.name}.ndim - {v.ndim}]" if v.ndim else f"{v.name}.shape"
                       for v in program.inputs]
        results = []
        for var in program.outputs:
            shape = f"_batch + {_tuple(var.shape)}"
            if var.name in self.literals:
                value = _float(self.literals[var.name])
                results.append(f"numpy.full({shape}, {value}, dtype=_dtype)" if np_ else
                               f"torch.full({shape}, {value}, dtype=_dtype, device=_device)")
            elif var in program.inputs:  # never hand back the caller's own array
                results.append(f"_out({var.name}.{'copy' if np_ else 'clone'}(), {shape})")
            else:
                results.append(f"_out({var.name}, {shape})")

        if np_:
            prologue = [f"_dtype = numpy.result_type({', '.join(names)}, numpy.float32)",
                        f"_batch = numpy.broadcast_shapes({', '.join(batch_parts)})"]
        else:  # per call, only what the body uses: at small sizes the prologue is a good part of the time
            used = " ".join([text for text, _ in body] + results)
            dtype = names[0] + ".dtype"
            for n in names[1:]:
                dtype = f"torch.promote_types({dtype}, {n}.dtype)"
            prologue = ([f"_dtype = {dtype}"] if re.search(r"\b_dtype\b", used) else []) + \
                ([f"_device = {names[0]}.device"] if re.search(r"\b_device\b", used) else []) + \
                [f"_batch = _broadcast({', '.join(batch_parts)})"]

        def nested(s):
            if isinstance(s, tuple):
                return _tuple(nested(x) for x in s)
            return results[s]

        returns = " ".join(f"{_tuple(v.shape)}" for v in program.outputs)
        structure_text = nested(program.structure)
        if isinstance(program.structure, tuple):
            returns = f"nested tuples {self._shape_structure(program.structure)}"
        else:
            returns = f"an array of core shape {returns}"
        helpers = (_NUMPY_HELPERS if np_ else _TORCH_HELPERS).splitlines()
        imports = (["import base64"] if self.needs_base64 else []) + (["import numpy"] if np_ else ["import torch"])
        digest = hashlib.sha256(repr((self.target, title, program.name, names, body, self.constants,
                                      structure_text)).encode()).hexdigest()[:16]
        from .. import __version__

        context = ModuleContext(
            title=title, function=program.name, version=__version__, target=self.target, content_hash=digest,
            arguments=tuple((v.name, _tuple(v.shape)) for v in program.inputs), returns=returns,
            imports=tuple(imports), constants=tuple(self.constants), helpers=tuple(helpers),
            checks=tuple(checks), prologue=tuple(prologue), body=tuple(body), result=structure_text)
        return environment().get_template("array_module.py.j2").render(m=context)

    def _shape_structure(self, s) -> str:
        if isinstance(s, tuple):
            return "(" + ", ".join(self._shape_structure(x) for x in s) + ("," if len(s) == 1 else "") + ")"
        return str(self.program.outputs[s].shape)


def print_module(program: ArrayProgram, target: str, title: str) -> str:
    """The source of a module whose ``kernel(*args)`` evaluates ``program`` (deterministic text)."""
    if not isinstance(title, str) or not _TITLE.fullmatch(title):
        raise ValueError(f"title must be a few plain words (letters, digits, spaces, '-'), got {title!r}")
    return ArrayPrinter(program, target).render(title)


def load_module(text: str, target: str) -> types.ModuleType:
    """Execute module ``text`` in a fresh module, registered under a name made of its hash."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = f"symjac_array_{target}_{digest}"
    filename = f"<{name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    if name in sys.modules:  # the name is the text's hash: the same text, loaded before
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(text, filename, "exec"), module.__dict__)
    # torch.compile imports the module of every function it inlines by name
    return sys.modules.setdefault(name, module)


def scalar_cost(program: ArrayProgram) -> int:
    """Estimated scalar operations of the same program written element by element
    (the scalar form): flops of every contraction, one per element of every
    other computed array, plus the outputs. Pass the *derived* program (what
    the scalar form would compile); ``form="auto"`` compares this with a
    threshold measured at the crossover (issue 19)."""
    total = 0
    for eqn in program.eqns:
        if eqn.prim == "einsum":
            sizes = {}
            for var, ls in zip(eqn.inputs, eqn.param("spec")[0]):
                sizes.update(zip(ls, var.shape))
            total += math.prod(sizes.values())
        elif eqn.prim in ("sum", "amax", "amin", "argmax_mask", "argmin_mask"):
            total += eqn.inputs[0].size
        elif eqn.prim in LINALG:  # a factorization: n³ per matrix
            n = eqn.inputs[0].shape[-1]
            total += math.prod(eqn.inputs[0].shape[:-2]) * n ** 3 + eqn.out.size
        elif eqn.prim in ("literal", "reshape", "transpose", "getitem", "broadcast"):
            continue
        else:
            total += eqn.out.size
    return int(total + sum(v.size for v in program.outputs))
