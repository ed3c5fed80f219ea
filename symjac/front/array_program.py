"""The array IR: shaped variables and one equation per primitive (like a jaxpr).

Fed by :mod:`symjac.front.array_trace` (which records a user function) and by
:mod:`symjac.derive.array_calculus` (which writes derivative programs);
consumed by :mod:`symjac.emit.array_printing`.

Every shape here is a *core* shape: at run time each value may carry extra
leading batch dimensions, broadcast like a numpy gufunc, so the printers align
operands on their trailing (core) axes and never loop over the batch.

    ArrayProgram     name, inputs, equations, outputs (+ how callers nest them)
    ├── Var          a shaped value: name, core shape, dtype ("f" float, "b" bool)
    └── Eqn          out = prim(inputs; params), params hashable

Primitives (``params`` in brackets):

    literal [value]             a Python float, printed inline
    constant [data]             a captured numpy array (ConstantData)
    eye [n] / zeros [shape]     built with the arguments' dtype and device
    <ufunc name>                elementwise with broadcasting: add, mul, tanh, ...
                                (the table is :data:`ELEMENTWISE`)
    cast                        bool -> float (1.0 / 0.0)
    einsum [spec]               ONE or TWO operands; spec = (labels of each operand,
                                output labels), labels small ints; longer contractions
                                are split into pairwise ones at build time
    sum/amax/amin [axes, keepdims]
    argmax_mask/argmin_mask [axes]  one-hot (first extremum, as numpy argmax) of x's shape
    reshape [shape] / transpose [perm] / broadcast [shape]
    getitem [index]             basic indexing, one entry per axis: ("s", start, stop, step),
                                ("i", k) or ("n",) for a new axis
    concat [axis]               along a core axis
    diag_embed                  (..., k) -> (..., k, k) with the values on the diagonal
    <linalg>                    :data:`LINALG`, on stacked matrices (core axes last, equal
                                stack shapes: the tracer broadcasts them first):
                                inv, solve (matrix right-hand side), det, slogdet
                                (log|det|), slogdet_sign, cholesky (of a symmetric
                                input), eigh_values, eigh_vectors (ascending, symmetric input),
                                eig_values, eig_vectors (real eigenvalues; complex ones are a
                                run-time error), svd_values, svd_u, svd_vh (thin SVD of any
                                (..., m, n)), svd_u_full, svd_vh_full (full_matrices=True,
                                non-square: values only, no derivative), pinv [rcond]

:class:`Builder` writes equations with common-subexpression elimination (the
same primitive on the same inputs is one variable) and folds literals, so
the derivative programs reuse the forward values (``tanh`` feeds ``1 - t**2``).
:meth:`Builder.contract` splits an Einstein summation into pairwise
contractions in the cheapest order for the shapes (exhaustive search up to
ten operands, greedy beyond), chosen here, at build time: the printed code
never searches a path at run time. A Builder told which inputs carry the
batch (the derivative programs: the points differentiated at) costs what
carries it :data:`BATCH_HINT` times, and lays intermediates out for the GEMM
that reads them.

Why an IR of our own rather than ``sympy.tensor.array.expressions``: the
calculus rules are the same (Laue et al.), but sympy 1.14's array printers
raise on elementwise functions and print wrong einsums for diagonals
(sympy#30395), its expressions have no notion of leading batch dimensions,
of a contraction order fixed at build time or of a torch target, and an
ArrayContraction tree is not a straight-line program with shared
subexpressions. A jaxpr-like list of equations is all the printers and the
calculus need, and each stage can print it (``str(program)``) for debugging.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ShapeError, TracingError

__all__ = ["ArrayFormError", "ArrayProgram", "Builder", "ConstantData", "ELEMENTWISE", "Eqn", "LINALG", "Var"]


class ArrayFormError(TracingError):
    """The array form cannot handle an operation (use form="scalar")."""


@dataclass(frozen=True)
class Var:
    name: str
    shape: tuple[int, ...]
    dtype: str = "f"  # "f" floating, "b" boolean

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return f"{self.name}:{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class ConstantData:
    """A captured array, hashable: its values as a flat tuple of floats."""

    shape: tuple[int, ...]
    values: tuple[float, ...]
    dtype: str = "f"

    @classmethod
    def of(cls, array) -> ConstantData:
        array = np.asarray(array)
        if array.dtype == bool:
            return cls(array.shape, tuple(bool(v) for v in array.ravel()), "b")
        return cls(array.shape, tuple(float(v) for v in np.asarray(array, dtype=np.float64).ravel()))

    def array(self) -> np.ndarray:
        return np.array(self.values, dtype=bool if self.dtype == "b" else np.float64).reshape(self.shape)


@dataclass(frozen=True)
class Eqn:
    out: Var
    prim: str
    inputs: tuple[Var, ...]
    params: tuple = ()

    def param(self, key, default=None):
        for k, v in self.params:
            if k == key:
                return v
        return default

    def __str__(self) -> str:
        shown = [f"{k}={v}" for k, v in self.params if k != "data"]
        if self.prim == "constant":
            shown.append(f"data<{len(self.param('data').values)}>")
        extra = f"[{', '.join(shown)}]" if shown else ""
        return f"{self.out} = {self.prim}{extra} {' '.join(v.name for v in self.inputs)}".rstrip()


@dataclass(frozen=True)
class ArrayProgram:
    """A straight-line array program: ``outputs`` (flat) nested as ``structure``."""

    name: str
    inputs: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Var, ...]
    structure: object  # nested tuples of output numbers, as callers see them
    output_is_tuple: bool = False

    def __str__(self) -> str:
        lines = [f"{{ lambda ; {' '.join(map(str, self.inputs))}. let"]
        lines += [f"    {eqn}" for eqn in self.eqns]
        lines.append(f"  in {self.structure_text()} }}")
        return "\n".join(lines)

    def structure_text(self) -> str:
        def show(s):
            if isinstance(s, tuple):
                return "(" + ", ".join(show(x) for x in s) + ("," if len(s) == 1 else "") + ")"
            return self.outputs[s].name
        return show(self.structure)



# --------------------------------------------------------------------------
# elementwise primitives: name -> (arity, numpy ufunc for folding, result dtype)

ELEMENTWISE: dict[str, tuple[int, object, str]] = {
    "add": (2, np.add, "f"), "sub": (2, np.subtract, "f"), "mul": (2, np.multiply, "f"),
    "div": (2, np.true_divide, "f"), "pow": (2, np.power, "f"), "neg": (1, np.negative, "f"),
    "sqrt": (1, np.sqrt, "f"), "cbrt": (1, np.cbrt, "f"), "square": (1, np.square, "f"),
    "reciprocal": (1, np.reciprocal, "f"), "exp": (1, np.exp, "f"), "exp2": (1, np.exp2, "f"),
    "expm1": (1, np.expm1, "f"), "log": (1, np.log, "f"), "log2": (1, np.log2, "f"),
    "log10": (1, np.log10, "f"), "log1p": (1, np.log1p, "f"), "logaddexp": (2, np.logaddexp, "f"),
    "sin": (1, np.sin, "f"), "cos": (1, np.cos, "f"), "tan": (1, np.tan, "f"),
    "arcsin": (1, np.arcsin, "f"), "arccos": (1, np.arccos, "f"), "arctan": (1, np.arctan, "f"),
    "arctan2": (2, np.arctan2, "f"), "hypot": (2, np.hypot, "f"), "sinh": (1, np.sinh, "f"),
    "cosh": (1, np.cosh, "f"), "tanh": (1, np.tanh, "f"), "arcsinh": (1, np.arcsinh, "f"),
    "arccosh": (1, np.arccosh, "f"), "arctanh": (1, np.arctanh, "f"), "abs": (1, np.abs, "f"),
    "sign": (1, np.sign, "f"), "maximum": (2, np.maximum, "f"), "minimum": (2, np.minimum, "f"),
    "heaviside": (2, np.heaviside, "f"), "where": (3, np.where, "f"), "cast": (1, np.float64, "f"),
    "gt": (2, np.greater, "b"), "ge": (2, np.greater_equal, "b"), "lt": (2, np.less, "b"),
    "le": (2, np.less_equal, "b"), "eq": (2, np.equal, "b"), "ne": (2, np.not_equal, "b"),
    "and": (2, np.logical_and, "b"), "or": (2, np.logical_or, "b"), "xor": (2, np.logical_xor, "b"),
    "not": (1, np.logical_not, "b"),
}

# linear algebra on stacked matrices (..., n, n): name -> (number of operands, output shape of the inputs' shapes)
LINALG: dict[str, tuple[int, object]] = {
    "inv": (1, lambda a: a),
    "solve": (2, lambda a, b: b),
    "det": (1, lambda a: a[:-2]),
    "slogdet": (1, lambda a: a[:-2]),
    "slogdet_sign": (1, lambda a: a[:-2]),
    "cholesky": (1, lambda a: a),
    "eigh_values": (1, lambda a: a[:-1]),
    "eigh_vectors": (1, lambda a: a),
    "svd_values": (1, lambda a: a[:-2] + (min(a[-2:]),)),  # any (..., m, n)
    "svd_u": (1, lambda a: a[:-1] + (min(a[-2:]),)),
    "svd_vh": (1, lambda a: a[:-2] + (min(a[-2:]), a[-1])),
    "svd_u_full": (1, lambda a: a[:-1] + (a[-2],)),
    "svd_vh_full": (1, lambda a: a[:-2] + (a[-1], a[-1])),
    "pinv": (1, lambda a: a[:-2] + (a[-1], a[-2])),
    "eig_values": (1, lambda a: a[:-1]),
    "eig_vectors": (1, lambda a: a),
}
_ANY_SHAPE = frozenset({"svd_values", "svd_u", "svd_vh", "svd_u_full", "svd_vh_full", "pinv"})  # not only square

_COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "eq", "ne", "and", "or", "xor", "hypot", "logaddexp"})


def broadcast_shapes(*shapes, what="operands") -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"{what} with shapes {', '.join(map(str, shapes))} do not broadcast") from None


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    result = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for an array of {ndim} dimensions")
        result.append(a % ndim)
    if len(set(result)) != len(result):
        raise ShapeError(f"repeated axis in {axis!r}")
    return tuple(sorted(result))


@dataclass
class Builder:
    """Writes equations with common-subexpression elimination and literal folding."""

    prefix: str = "_t"
    # names of the inputs assumed to carry the batch dimensions (None: every
    # input may): what contraction orders are costed with (see BATCH_HINT)
    batched: frozenset | None = None
    eqns: list = field(default_factory=list)
    _table: dict = field(default_factory=dict)
    _by_name: dict = field(default_factory=dict)
    _count: itertools.count = field(default_factory=itertools.count)
    _carries: dict = field(default_factory=dict)

    # -- bookkeeping ---------------------------------------------------------
    def emit(self, prim: str, inputs, shape, params=(), dtype="f") -> Var:
        inputs = tuple(inputs)
        if prim in _COMMUTATIVE and len(inputs) == 2:
            inputs = tuple(sorted(inputs, key=lambda v: v.name))
        key = (prim, tuple(v.name for v in inputs), params)
        found = self._table.get(key)
        if found is not None:
            return found
        out = Var(f"{self.prefix}{next(self._count)}", tuple(int(s) for s in shape), dtype)
        eqn = Eqn(out, prim, inputs, params)
        self.eqns.append(eqn)
        self._table[key] = out
        self._by_name[out.name] = eqn
        return out

    def replay(self, eqn: Eqn, rename: dict) -> Var:
        """Re-emit ``eqn`` (from another program) with its inputs renamed."""
        inputs = tuple(rename[v.name] for v in eqn.inputs)
        return self.emit(eqn.prim, inputs, eqn.out.shape, eqn.params, eqn.out.dtype)

    def eqn(self, var: Var) -> Eqn | None:
        return self._by_name.get(var.name)

    def carries_batch(self, var: Var) -> bool:
        """Whether ``var`` is assumed to carry batch dimensions: it depends on a
        ``batched`` input (constants and literals never do)."""
        if self.batched is None:
            return True
        found = self._carries.get(var.name)
        if found is None:
            stack = [var]
            while stack:  # iteratively: programs can be deep
                v = stack.pop()
                if v.name in self._carries:
                    continue
                eqn = self._by_name.get(v.name)
                pending = [] if eqn is None else [u for u in eqn.inputs if u.name not in self._carries]
                if pending:
                    stack.append(v)
                    stack.extend(pending)
                else:
                    self._carries[v.name] = v.name in self.batched if eqn is None else \
                        any(self._carries[u.name] for u in eqn.inputs)
            found = self._carries[var.name]
        return found

    def literal_value(self, var: Var):
        eqn = self._by_name.get(var.name)
        if eqn is not None and eqn.prim == "literal":
            return eqn.param("value")
        return None

    # -- leaves ----------------------------------------------------------------
    def literal(self, value) -> Var:
        value = float(value)
        if value == 0.0:
            value = 0.0  # no -0.0 literals
        return self.emit("literal", (), (), (("value", value),))

    def constant(self, array) -> Var:
        array = np.asarray(array)
        if array.ndim == 0 and array.dtype != bool:
            return self.literal(float(array))
        data = ConstantData.of(array)
        return self.emit("constant", (), array.shape, (("data", data),), data.dtype)

    def eye(self, n: int) -> Var:
        return self.emit("eye", (), (n, n), (("n", int(n)),))

    def zeros(self, shape) -> Var:
        shape = tuple(int(s) for s in shape)
        return self.emit("zeros", (), shape, (("shape", shape),))

    # -- elementwise -------------------------------------------------------
    def elementwise(self, prim: str, *inputs: Var) -> Var:
        arity, fold, dtype = ELEMENTWISE[prim]
        if len(inputs) != arity:
            raise ArrayFormError(f"{prim} takes {arity} operands, got {len(inputs)}")
        shape = broadcast_shapes(*(v.shape for v in inputs), what=f"operands of {prim}")
        if dtype == "f" and prim not in ("cast", "where"):  # booleans take part in arithmetic as 0.0 / 1.0
            inputs = tuple(self.elementwise("cast", v) if v.dtype == "b" else v for v in inputs)
        elif prim == "where":
            inputs = inputs[:1] + tuple(self.elementwise("cast", v) if v.dtype == "b" else v for v in inputs[1:])
        values = [self.literal_value(v) for v in inputs]
        if all(v is not None for v in values) and dtype == "f":
            with np.errstate(all="ignore"):
                return self.literal(fold(*values))
        simplified = self._simplify(prim, inputs, values, shape)
        if simplified is not None:
            return simplified
        return self.emit(prim, inputs, shape, (), dtype)

    def _simplify(self, prim, inputs, values, shape):
        a = inputs[0]
        b = inputs[1] if len(inputs) > 1 else None
        va, vb = values[0], values[1] if len(values) > 1 else None

        def same_shape(v):
            return v if v.shape == shape else None

        if prim == "add":
            if va == 0.0:
                return same_shape(b)
            if vb == 0.0:
                return same_shape(a)
        elif prim == "sub":
            if vb == 0.0:
                return same_shape(a)
            if va == 0.0:
                return self.elementwise("neg", b)
        elif prim == "mul":
            if va == 1.0:
                return same_shape(b)
            if vb == 1.0:
                return same_shape(a)
            if va == -1.0:
                return self.elementwise("neg", b) if b.shape == shape else None
            if vb == -1.0:
                return self.elementwise("neg", a) if a.shape == shape else None
        elif prim == "div":
            if vb == 1.0:
                return same_shape(a)
        elif prim == "neg":
            eqn = self.eqn(a)
            if eqn is not None and eqn.prim == "neg":
                return eqn.inputs[0]
        elif prim == "pow":
            if vb == 1.0:
                return same_shape(a)
        return None

    def add(self, a, b):
        return self.elementwise("add", a, b)

    def sub(self, a, b):
        return self.elementwise("sub", a, b)

    def mul(self, a, b):
        return self.elementwise("mul", a, b)

    def div(self, a, b):
        return self.elementwise("div", a, b)

    def neg(self, a):
        return self.elementwise("neg", a)

    def call(self, prim, *a):
        return self.elementwise(prim, *a)

    # -- structure ---------------------------------------------------------
    def reduce(self, prim: str, x: Var, axes: tuple[int, ...], keepdims: bool) -> Var:
        if x.dtype == "b":
            x = self.elementwise("cast", x)
        if not axes:
            return x
        shape = tuple(1 if k in axes else s for k, s in enumerate(x.shape)) if keepdims else \
            tuple(s for k, s in enumerate(x.shape) if k not in axes)
        if prim in ("amax", "amin") and any(x.shape[k] == 0 for k in axes):
            raise ShapeError(f"{prim} of an empty axis")
        return self.emit(prim, (x,), shape, (("axes", tuple(axes)), ("keepdims", bool(keepdims))))

    def extremum_mask(self, prim: str, x: Var, axes: tuple[int, ...]) -> Var:
        return self.emit(prim, (x,), x.shape, (("axes", tuple(axes)),))

    def reshape(self, x: Var, shape) -> Var:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != x.size:
            raise ShapeError(f"cannot reshape an array of shape {x.shape} into shape {shape}")
        if shape == x.shape:
            return x
        value = self.literal_value(x)
        if value is not None and len(shape) == 0:
            return x
        return self.emit("reshape", (x,), shape, (("shape", shape),), x.dtype)

    def transpose(self, x: Var, perm) -> Var:
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(x.ndim)):
            raise ShapeError(f"axes {perm} are not a permutation of {x.ndim} axes")
        if perm == tuple(range(x.ndim)):
            return x
        eqn = self.eqn(x)
        if eqn is not None and eqn.prim == "transpose":  # transpose of transpose
            inner = eqn.param("perm")
            return self.transpose(eqn.inputs[0], tuple(inner[p] for p in perm))
        return self.emit("transpose", (x,), tuple(x.shape[p] for p in perm), (("perm", perm),), x.dtype)

    def broadcast(self, x: Var, shape) -> Var:
        shape = tuple(int(s) for s in shape)
        if broadcast_shapes(x.shape, shape, what="broadcast_to") != shape:
            raise ShapeError(f"cannot broadcast shape {x.shape} to {shape}")
        if x.shape == shape:
            return x
        return self.emit("broadcast", (x,), shape, (("shape", shape),), x.dtype)

    def getitem(self, x: Var, index: tuple) -> Var:
        shape, axis = [], 0
        for entry in index:
            if entry[0] == "s":
                shape.append(len(range(entry[1], entry[2], entry[3])))
                axis += 1
            elif entry[0] == "i":
                axis += 1
            else:
                shape.append(1)
        if len(index) == x.ndim and all(e == ("s", 0, x.shape[k], 1) for k, e in enumerate(index)):
            return x
        return self.emit("getitem", (x,), tuple(shape), (("index", tuple(index)),), x.dtype)

    def concat(self, xs, axis: int) -> Var:
        xs = tuple(xs)
        if len(xs) == 1:
            return xs[0]
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        dtype = "b" if all(x.dtype == "b" for x in xs) else "f"
        return self.emit("concat", xs, tuple(shape), (("axis", axis),), dtype)

    def diag_embed(self, x: Var) -> Var:
        return self.emit("diag_embed", (x,), x.shape + x.shape[-1:])

    def linalg(self, prim: str, *inputs: Var, params=()) -> Var:
        """A :data:`LINALG` primitive; operands are stacks of square matrices with
        equal stack shapes (a ``solve`` right-hand side a stack of matrices)."""
        arity, shape_of = LINALG[prim]
        if len(inputs) != arity:
            raise ArrayFormError(f"{prim} takes {arity} operands, got {len(inputs)}")
        a = inputs[0]
        if a.ndim < 2 or a.shape[-1] != a.shape[-2] and prim not in _ANY_SHAPE:
            raise ShapeError(f"{prim}: needs square matrices (..., n, n), got shape {a.shape}")
        if prim == "solve":
            rhs = inputs[1]
            if rhs.ndim != a.ndim or rhs.shape[:-2] != a.shape[:-2] or rhs.shape[-2] != a.shape[-1]:
                raise ShapeError(f"solve: right-hand side of shape {rhs.shape} for matrices of shape {a.shape}")
        inputs = tuple(self.elementwise("cast", v) if v.dtype == "b" else v for v in inputs)
        return self.emit(prim, inputs, shape_of(*(v.shape for v in inputs)), tuple(params))

    def einsum(self, operands, labels, out) -> Var:
        """One raw einsum equation (one or two operands): see :meth:`contract`."""
        operands, labels, out = tuple(operands), tuple(tuple(l) for l in labels), tuple(out)
        operands = tuple(self.elementwise("cast", v) if v.dtype == "b" else v for v in operands)
        sizes = {}
        for var, ls in zip(operands, labels):
            for label, size in zip(ls, var.shape):
                sizes[label] = size
        # canonical relabelling so equal contractions share one variable
        order = {}
        for label in itertools.chain(*labels, out):
            order.setdefault(label, len(order))
        spec = (tuple(tuple(order[l] for l in ls) for ls in labels), tuple(order[l] for l in out))
        if len(operands) == 2 and (operands[1].name, spec[0][1]) < (operands[0].name, spec[0][0]):
            operands, labels = operands[::-1], labels[::-1]
            return self.einsum(operands, labels, out)
        return self.emit("einsum", operands, tuple(sizes[l] for l in out), (("spec", spec),))

    def contract(self, operands, labels, out, sizes) -> Var:
        """Einstein summation over any number of operands, split into pairwise
        contractions in an order chosen here, from the sizes, at build time."""
        return _contract(self, tuple(operands), tuple(tuple(l) for l in labels), tuple(out), sizes)


# --------------------------------------------------------------------------
# contraction order, fixed at build time


def _unary(b: Builder, var: Var, labels, keep) -> Var:
    """Diagonals and sums of one operand: ``labels`` -> ``keep`` (unique)."""
    keep = tuple(keep)
    if len(set(labels)) == len(labels):
        dropped = tuple(k for k, l in enumerate(labels) if l not in keep)
        if dropped:
            var = b.reduce("sum", var, dropped, False)
            labels = tuple(l for l in labels if l in keep)
        return b.transpose(var, tuple(labels.index(l) for l in keep))
    return b.einsum((var,), (labels,), keep)


# The batch size the build-time plan assumes: a contraction or an intermediate
# that carries the batch (Builder.carries_batch) costs this many times its core
# size. So the factors shared by the whole batch are contracted with each other
# first when that saves work per sample: a decoder's Jacobian W2 diag(s) W1
# becomes s @ (W2 ⊗ W1) (one GEMM over the batch, no (batch, hidden, k)
# intermediate) while k < BATCH_HINT, and W2 @ (s * W1) for taller Jacobians.
# W2 ⊗ W1 (hidden·k²) is paid once a call, the intermediate it saves
# (hidden·k) per sample, so it pays from about k samples; the order is fixed at
# build time, and 128 is a guess between the benchmarks' batch of 256, where
# the penalty step of 64 -> 1024 -> 64 runs 3x faster so, and small batches:
# 8 -> 256 -> 256 took 1.4x as long at batch 16 with the guess at 256.
BATCH_HINT = 128


def _plan(label_sets, out, sizes, batched=None):
    """The pairwise order (list of index pairs into a growing operand list),
    minimising flops plus intermediate sizes, each times BATCH_HINT where it
    carries the batch (``batched``: a flag per operand; None: all alike):
    exhaustive for few operands, greedy else."""
    n = len(label_sets)
    out = frozenset(out)
    batched = [True] * n if batched is None else list(batched)
    hint = BATCH_HINT if any(batched) and not all(batched) else 1

    def size(labels):
        return math.prod(sizes[l] for l in labels)

    if n <= 10:
        # labels as bits; the size of a set of labels memoised by its bitmask
        bit = {label: 1 << k for k, label in enumerate(sorted(set().union(*label_sets) | out))}
        label_of = {b: label for label, b in bit.items()}
        sizes_cache: dict[int, int] = {0: 1}

        def size_bits(bits: int) -> int:
            found = sizes_cache.get(bits)
            if found is None:
                low = bits & -bits
                found = sizes_cache[bits] = size_bits(bits ^ low) * sizes[label_of[low]]
            return found

        out_bits = sum(bit[l] for l in out)
        operand_bits = [sum(bit[l] for l in labels) for labels in label_sets]
        full = (1 << n) - 1
        union = [0] * (1 << n)
        weight = [1] * (1 << n)  # BATCH_HINT where some operand of the subset carries the batch
        for mask in range(1, 1 << n):
            low = (mask & -mask).bit_length() - 1
            union[mask] = union[mask & (mask - 1)] | operand_bits[low]
            weight[mask] = hint if batched[low] else weight[mask & (mask - 1)]
        kept = [union[mask] & (out_bits | union[full & ~mask]) for mask in range(1 << n)]
        best = {1 << k: (0, None) for k in range(n)}
        for mask in sorted(range(1, 1 << n), key=lambda m: (bin(m).count("1"), m)):
            if mask in best:
                continue
            low = mask & -mask
            result_size = size_bits(kept[mask])
            choice = None
            sub = (mask - 1) & mask
            while sub:
                if sub & low:
                    other = mask ^ sub
                    cost = best[sub][0] + best[other][0] + \
                        weight[mask] * (size_bits(kept[sub] | kept[other]) + result_size)
                    if choice is None or cost < choice[0]:
                        choice = (cost, (sub, other))
                sub = (sub - 1) & mask
            best[mask] = choice

        steps = []

        def walk(mask):  # returns the position of mask's result in the operand list
            split = best[mask][1]
            if split is None:
                return (mask & -mask).bit_length() - 1
            a, c = walk(split[0]), walk(split[1])
            steps.append((a, c))
            return n + len(steps) - 1

        walk(full)
        return steps
    # greedy, as opt_einsum's: pairs that share an index first, the one that
    # shrinks the operands most (then the fewest flops)
    current = {k: frozenset(s) for k, s in enumerate(label_sets)}
    weights = {k: hint if b else 1 for k, b in enumerate(batched)}
    steps, position = [], n
    while len(current) > 1:
        keys = sorted(current)
        best_pair = None
        for i, j in itertools.combinations(keys, 2):
            rest = frozenset().union(*(current[k] for k in keys if k not in (i, j)))
            result = (current[i] | current[j]) & (out | rest)
            w = max(weights[i], weights[j])
            cost = (not (current[i] & current[j]),
                    w * size(result) - weights[i] * size(current[i]) - weights[j] * size(current[j]),
                    w * size(current[i] | current[j]))
            if best_pair is None or cost < best_pair[0]:
                best_pair = (cost, i, j, result)
        _, i, j, result = best_pair
        weights[position] = max(weights.pop(i), weights.pop(j))
        del current[i], current[j]
        current[position] = result
        steps.append((i, j))
        position += 1
    return steps


def _layouts(label_sets, steps, out, batched):
    """For each intermediate of the plan (by position in the operand list) that
    a later step contracts, the order of its labels that lets that step run as
    one GEMM without a copy: labels shared with the partner and kept first, then,
    for an operand that carries the batch (or whose partner does not), its own
    labels then the contracted ones (the rows of a GEMM over the whole batch,
    ``(batch·rows, k)``; ``_matmul`` turns a product with the batch on the right
    around), else the contracted ones first (the GEMM's other factor,
    ``(k, columns)``: the decoder's ``W2 ⊗ W1`` in ``s @ (W2 ⊗ W1)``)."""
    n = len(label_sets)
    sets = [frozenset(s) for s in label_sets]
    batched = list(batched)
    alive = set(range(n))
    consumer = {}
    for i, j in steps:
        alive -= {i, j}
        needed = frozenset(out).union(*(sets[k] for k in alive))
        consumer[i], consumer[j] = (j, needed), (i, needed)
        sets.append((sets[i] | sets[j]) & needed)
        batched.append(batched[i] or batched[j])
        alive.add(len(sets) - 1)
    orders = {}
    for p in range(n, len(sets) - 1):
        partner, needed = consumer[p]
        shared = sets[p] & sets[partner]
        kept, contracted = shared & needed, shared - needed
        if not contracted:  # a broadcast product reads any layout
            continue
        rows = batched[p] or not batched[partner]
        orders[p] = (kept, sets[p] - shared, contracted) if rows else (kept, contracted, sets[p] - shared)
    return orders


def _constant_value(b: Builder, var: Var):
    """The value of a literal, or of a literal broadcast to a shape (ones, zeros ...)."""
    value = b.literal_value(var)
    if value is None:
        eqn = b.eqn(var)
        if eqn is not None and eqn.prim == "broadcast":
            value = b.literal_value(eqn.inputs[0])
    return value


def _contract(b: Builder, operands, labels, out, sizes) -> Var:
    """Literal and constant-filled operands become a coefficient (their indices
    broadcast or count); the rest are contracted pairwise in the planned order."""
    coefficient, items, filled = 1.0, [], set()
    for var, ls in zip(operands, labels):
        value = _constant_value(b, var)
        if value is not None:
            coefficient *= value
            filled.update(ls)
        else:
            items.append((var, tuple(ls)))
    if len(set(out)) != len(out):
        raise ArrayFormError("einsum with a repeated output index")
    everywhere = set(itertools.chain(*(ls for _, ls in items)))
    missing = [l for l in out if l not in everywhere]
    if any(l not in filled for l in missing):
        raise ArrayFormError("einsum output index that appears in no operand")
    for label in filled - everywhere - set(out):
        coefficient *= sizes[label]  # a sum over an index that nothing depends on
    if missing:
        inner = tuple(l for l in out if l in everywhere)
        result = _contract(b, [v for v, _ in items], [ls for _, ls in items], inner, sizes) if items \
            else b.literal(1.0)
        if coefficient != 1.0:
            result = b.mul(b.literal(coefficient), result)
        if b.literal_value(result) is None:
            result = b.reshape(result, result.shape + (1,) * len(missing))
        result = b.broadcast(result, tuple(sizes[l] for l in inner + tuple(missing)))
        current = inner + tuple(missing)
        return b.transpose(result, [current.index(l) for l in out])
    # diagonals and indices that only one operand has: reduce them first
    prepared = []
    for k, (var, ls) in enumerate(items):
        elsewhere = set(out).union(*(set(o) for j, (_, o) in enumerate(items) if j != k))
        keep = tuple(dict.fromkeys(l for l in ls if l in elsewhere))
        if keep != ls:
            var = _unary(b, var, ls, keep)
        prepared.append((var, keep))
    if not prepared:
        return b.literal(coefficient)
    if len(prepared) == 1:
        var, ls = prepared[0]
        result = _unary(b, var, ls, out)
    else:
        label_sets = [frozenset(ls) for _, ls in prepared]
        batched = [b.carries_batch(var) for var, _ in prepared]
        steps = _plan(label_sets, out, sizes, batched)
        layouts = _layouts(label_sets, steps, out, batched)
        pool = list(prepared)
        alive = set(range(len(pool)))
        for i, j in steps:
            (va, la), (vb, lb) = pool[i], pool[j]
            alive -= {i, j}
            needed = set(out).union(*(set(pool[k][1]) for k in alive))
            result_labels = tuple(l for l in dict.fromkeys(la + lb) if l in needed)
            if not alive and set(result_labels) == set(out):
                result_labels = tuple(out)  # the last step writes the output order directly
            elif len(pool) in layouts:  # grouped for the GEMM of the step that consumes it, in out's order
                ordered = sorted(result_labels, key=lambda l: out.index(l) if l in out else len(out))
                result_labels = tuple(l for group in layouts[len(pool)] for l in ordered if l in group)
            pool.append((b.einsum((va, vb), (la, lb), result_labels), result_labels))
            alive.add(len(pool) - 1)
        var, ls = pool[-1]
        result = _unary(b, var, ls, out)
    if coefficient != 1.0:
        result = b.mul(b.literal(coefficient), result)
    return result
