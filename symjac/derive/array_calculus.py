"""Array calculus: derivative programs of array programs, at array level.

Fed an :class:`~symjac.front.array_program.ArrayProgram` by
:mod:`symjac.front.array_trace` (or by this module: a Hessian is the Jacobian
of a first-derivative program); hands an ArrayProgram to
:mod:`symjac.emit.array_printing`.

The derivative of a variable ``v`` with respect to an input ``x`` is kept
symbolic, as a short sum of :class:`Term`\\ s in Einstein notation (Laue,
Mitterreiter, Giesen 2018/2020): a product of *factors* (program variables,
each with index labels), and which labels stand for ``v``'s axes and which for
``x``'s. Nothing is contracted while the chain rule runs:

- an elementwise map contributes its derivative as a factor on the *shared*
  labels of input and output (a vector on one index, never a diagonal matrix);
- identities (the start, ``+``, transposes, broadcasting) only rename or merge
  labels: no ``eye`` operand;
- a contraction (matmul, einsum, tensordot) contributes its other operands.

Only when a result is needed (a Jacobian block, J v) is a term contracted,
by :meth:`Builder.contract`, in the pairwise order that is cheapest for the
shapes, chosen here at build time: for a decoder Jacobian that is
forward-like (``W2 @ (d[:, None] * W1)``), for a single output row
reverse-like (vector times matrix first). Terms that differ only in their
last factors are merged (``s·dm − s·s·dm`` becomes ``s(1 − s)·dm``).

Gradients and vector-Jacobian products use one backward sweep instead
(reverse mode, as JAX's transposition): each equation's local derivative,
the same Einstein-form rule the forward terms use, is contracted with the
cotangent of its output, so the cost stays a small multiple of the function
however many paths the program has (attention, residual connections). A
Hessian of a scalar is the forward Jacobian of that gradient program
(forward over reverse): for logistic regression ``X.T @ (s(1−s)[:, None] * X)``.

Every equation goes through the builder that holds the forward program, so
derivatives share its values (``1 - t**2`` reads the forward ``tanh``).

    what        result (conventions of symjac.derivatives / symjac.derive.kinds)
    function    the program itself
    jacobian    J[i][j]: output_i.shape + wrt_j.shape
    hessian     H[i][j][k]: output_i.shape + wrt_j.shape + wrt_k.shape (Jacobian of the Jacobian)
    gradient    scalar output only: shaped like wrt (a tuple for a tuple wrt); reverse mode
    jvp         extra arguments v (or v_<name> per wrt): J v, shaped like the outputs
    vjp         extra arguments u (or u0, u1, ... per output): uᵀJ, shaped like wrt; reverse mode
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..front.array_program import LINALG, ArrayFormError, ArrayProgram, Builder, Eqn, Var
from ..front.array_trace import program_from

__all__ = ["DERIVATIVES", "Term", "derive"]

MAX_TERMS = 8  # beyond this many terms a derivative is contracted into one dense factor ...
MAX_DENSE = 1 << 22  # ... unless that factor (variable size x input size) would be larger than this


@dataclass(frozen=True)
class Term:
    """coeff · Π factors, over labels; ``vl`` label the variable's axes, ``xl`` the input's."""

    coeff: float
    factors: tuple[tuple[Var, tuple[int, ...]], ...]
    vl: tuple[int, ...]
    xl: tuple[int, ...]


def _nest(levels, counts):
    numbers = iter(range(math.prod(counts)))

    def build(depth):
        if depth == len(counts):
            return next(numbers)
        items = tuple(build(depth + 1) for _ in range(counts[depth]))
        return items if levels[depth] else items[0]

    return build(0)


# --------------------------------------------------------------------------
# partial derivatives of elementwise primitives: (builder, inputs, output, k) -> None | float | Var


def _lit_or(b: Builder, var: Var):
    value = b.literal_value(var)
    return value if value is not None else var


def _partial(b: Builder, prim: str, ins, out: Var, k: int):
    a = ins[0]
    c = ins[1] if len(ins) > 1 else None
    L = b.literal
    if prim == "add":
        return 1.0
    if prim == "sub":
        return 1.0 if k == 0 else -1.0
    if prim == "mul":
        return _lit_or(b, ins[1 - k])
    if prim == "div":
        return b.div(L(1.0), c) if k == 0 else b.neg(b.div(out, c))
    if prim == "neg":
        return -1.0
    if prim == "pow":
        exponent = b.literal_value(c)
        if k == 0:
            if exponent is not None:
                if exponent == 2.0:
                    return b.mul(L(2.0), a)
                return b.mul(L(exponent), b.call("pow", a, L(exponent - 1.0)))
            return b.mul(c, b.call("pow", a, b.sub(c, L(1.0))))
        return b.mul(out, b.call("log", a))
    if prim == "sqrt":
        return b.div(L(0.5), out)
    if prim == "cbrt":
        return b.div(out, b.mul(L(3.0), a))
    if prim == "square":
        return b.mul(L(2.0), a)
    if prim == "reciprocal":
        return b.neg(b.call("square", out))
    if prim == "exp":
        return out
    if prim == "exp2":
        return b.mul(L(math.log(2.0)), out)
    if prim == "expm1":
        return b.add(out, L(1.0))
    if prim == "log":
        return b.call("reciprocal", a)
    if prim == "log2":
        return b.div(L(1.0 / math.log(2.0)), a)
    if prim == "log10":
        return b.div(L(1.0 / math.log(10.0)), a)
    if prim == "log1p":
        return b.call("reciprocal", b.add(L(1.0), a))
    if prim == "logaddexp":
        return b.call("exp", b.sub(ins[k], out))
    if prim == "sin":
        return b.call("cos", a)
    if prim == "cos":
        return b.neg(b.call("sin", a))
    if prim == "tan":
        return b.add(L(1.0), b.call("square", out))
    if prim in ("arcsin", "arccos"):
        d = b.call("reciprocal", b.call("sqrt", b.sub(L(1.0), b.call("square", a))))
        return d if prim == "arcsin" else b.neg(d)
    if prim == "arctan":
        return b.call("reciprocal", b.add(L(1.0), b.call("square", a)))
    if prim == "arctan2":
        r2 = b.add(b.call("square", a), b.call("square", c))
        return b.div(c, r2) if k == 0 else b.neg(b.div(a, r2))
    if prim == "hypot":
        return b.div(ins[k], out)
    if prim == "sinh":
        return b.call("cosh", a)
    if prim == "cosh":
        return b.call("sinh", a)
    if prim == "tanh":
        return b.sub(L(1.0), b.call("square", out))
    if prim == "arcsinh":
        return b.call("reciprocal", b.call("sqrt", b.add(b.call("square", a), L(1.0))))
    if prim == "arccosh":
        return b.call("reciprocal", b.call("sqrt", b.sub(b.call("square", a), L(1.0))))
    if prim == "arctanh":
        return b.call("reciprocal", b.sub(L(1.0), b.call("square", a)))
    if prim == "abs":
        return b.call("sign", a)
    if prim in ("maximum", "minimum"):  # ties go to the first operand, as in the scalar form
        mask = b.call("cast", b.call("ge" if prim == "maximum" else "le", a, c))
        return mask if k == 0 else b.sub(L(1.0), mask)
    if prim == "heaviside":
        return None if k == 0 else b.call("cast", b.call("eq", a, L(0.0)))
    if prim == "where":
        if k == 0:
            return None
        mask = b.call("cast", a)
        return mask if k == 1 else b.sub(L(1.0), mask)
    if prim in ("sign", "cast", "gt", "ge", "lt", "le", "eq", "ne", "and", "or", "xor", "not"):
        return None
    raise ArrayFormError(f"no derivative rule for the array primitive {prim!r}; use form=\"scalar\"")


_ZERO_DERIVATIVE = frozenset({"literal", "constant", "eye", "zeros", "argmax_mask", "argmin_mask", "slogdet_sign"})


class _Deriver:
    """Forward accumulation of symbolic terms over one program's equations."""

    def __init__(self, program: ArrayProgram, batched=None) -> None:
        self.program = program
        # ``batched``: names of the inputs taken for the points of a batch (the
        # others are parameters shared by it) when contraction orders are costed
        # (array_program.BATCH_HINT); None: no input is told apart
        self.b = Builder(batched=None if batched is None else frozenset(batched))
        self.rename: dict[str, Var] = {v.name: v for v in program.inputs}
        for eqn in program.eqns:
            self.rename[eqn.out.name] = self.b.replay(eqn, self.rename)
        self.forward = [self.b.eqn(self.rename[eqn.out.name]) for eqn in program.eqns]
        self.sizes: dict[int, int] = {}
        self._labels = itertools.count()

    def var(self, original: Var) -> Var:
        return self.rename[original.name]

    def fresh(self, size: int) -> int:
        label = next(self._labels)
        self.sizes[label] = int(size)
        return label

    # -- the chain rule ----------------------------------------------------
    def tangents(self, x: Var) -> dict[str, list[Term]]:
        labels = tuple(self.fresh(s) for s in x.shape)
        D = {x.name: [Term(1.0, (), labels, labels)]}
        seen = set()
        for eqn in self.forward:
            if eqn is None or eqn.out.name in seen:
                continue
            seen.add(eqn.out.name)
            if not any(v.name in D for v in eqn.inputs) or eqn.prim in _ZERO_DERIVATIVE:
                continue
            terms = self.merged(self.rule(eqn, D))
            if len(terms) > MAX_TERMS and eqn.out.size * x.size <= MAX_DENSE:
                terms = [self.dense_term(terms, eqn.out, x)]
            if terms:
                D[eqn.out.name] = terms
        return D

    def merged(self, terms: list[Term]) -> list[Term]:
        """Terms that differ only in their last factors become one term whose last
        factor is the (pointwise) sum: s·dm - s·s·dm -> s·(1 - s)·dm."""
        terms = list(terms)
        changed = True
        while changed and len(terms) > 1:
            changed = False
            for i, j in itertools.combinations(range(len(terms)), 2):
                merged = self._merge_pair(terms[i], terms[j])
                if merged is not None:
                    terms = terms[:i] + [merged] + terms[i + 1:j] + terms[j + 1:]
                    changed = True
                    break
        return terms

    def _merge_pair(self, t1: Term, t2: Term):
        if t1.xl != t2.xl:
            return None
        if t1.vl != t2.vl:
            return self._merge_across(t1, t2) or self._merge_across(t2, t1)
        p = 0
        while p < min(len(t1.factors), len(t2.factors)) and t1.factors[p] == t2.factors[p]:
            p += 1
        prefix, f1, f2 = t1.factors[:p], t1.factors[p:], t2.factors[p:]
        if not f1 and not f2:
            return Term(t1.coeff + t2.coeff, prefix, t1.vl, t1.xl)
        outer = set(t1.vl) | set(t1.xl) | {l for _, ls in prefix for l in ls}
        labels1 = [l for _, ls in f1 for l in ls]
        labels2 = [l for _, ls in f2 for l in ls]
        if (set(labels1) - outer) & (set(labels2) - outer):
            return None
        shared = tuple(l for l in dict.fromkeys(labels1 + labels2) if l in outer)
        size = math.prod(self.sizes[l] for l in shared)
        if size > max([v.size for v, _ in f1 + f2] + [1]):
            return None
        parts = []
        for factors, coeff in ((f1, t1.coeff), (f2, t2.coeff)):
            if not factors:
                parts.append(self.b.literal(coeff))
            else:
                parts.append(self.realize_unique(factors, coeff, shared))
        if parts[0].shape != parts[1].shape and self.b.literal_value(parts[0]) is None \
                and self.b.literal_value(parts[1]) is None:
            return None
        combined = self.b.add(parts[0], parts[1])
        if combined.shape != tuple(self.sizes[l] for l in shared):
            combined = self.b.broadcast(combined, tuple(self.sizes[l] for l in shared))
        return Term(1.0, prefix + ((combined, shared),), t1.vl, t1.xl)

    def _merge_across(self, t1: Term, t2: Term):
        """Merge terms whose variable axes carry different labels (two paths that
        meet again, as in a residual ``z + f(z)``): with P their common factors,
        P·S1 (axes vl1) + P·S2 (axes vl2) = P·G, G = S1·δ(vl1, vl2) + S2 on vl2's
        labels; G is at most as large as the largest factor it replaces."""
        if len(t1.vl) != len(t2.vl) or any(self.sizes[a] != self.sizes[c] for a, c in zip(t1.vl, t2.vl)) \
                or len(set(t2.vl)) != len(t2.vl):
            return None
        p = 0
        while p < min(len(t1.factors), len(t2.factors)) and t1.factors[p] == t2.factors[p]:
            p += 1
        prefix, f1, f2 = t1.factors[:p], t1.factors[p:], t2.factors[p:]
        in_prefix = {l for _, ls in prefix for l in ls}
        labels1 = [l for _, ls in f1 for l in ls]
        labels2 = [l for _, ls in f2 for l in ls]
        if set(t2.vl) & (in_prefix | set(t1.xl) | set(labels1) | set(t1.vl)):
            return None  # t2's axis labels must be free to stand for t1's axes too
        outer = in_prefix | set(t1.xl) | set(t2.vl)  # t1's own axis labels are summed in G unless kept apart
        kept_apart = tuple(l for l in t1.vl if l in in_prefix or l in t1.xl)  # where δ(vl1, vl2) must show
        shared = tuple(dict.fromkeys(t2.vl + kept_apart + tuple(l for l in labels1 + labels2 if l in outer)))
        if math.prod(self.sizes[l] for l in shared) > max([v.size for v, _ in f1 + f2] + [1]):
            return None
        rename = dict(zip(t2.vl, t1.vl))
        part1 = self.realize(f1, t1.coeff, tuple(rename.get(l, l) for l in shared))  # δ(vl1, vl2) as a diagonal
        part2 = self.realize_unique(f2, t2.coeff, shared)
        combined = self.b.add(part1, part2)
        if combined.shape != tuple(self.sizes[l] for l in shared):
            combined = self.b.broadcast(combined, tuple(self.sizes[l] for l in shared))
        return Term(1.0, prefix + ((combined, shared),), t2.vl, t2.xl)

    def compose(self, t: Term, coeff: float, factors, v_slots, u_slots) -> Term:
        """Substitute ``t`` (a derivative of an input whose axes are ``u_slots``)
        into a local derivative; fresh slots become labels, repeated ones merge."""
        merged: dict[int, int] = {}

        def find(label):
            while label in merged:
                label = merged[label]
            return label

        binding: dict[int, int] = {}
        for slot, label in zip(u_slots, t.vl):
            label = find(label)
            if slot in binding:
                other = find(binding[slot])
                if other != label:
                    merged[label] = other
            else:
                binding[slot] = label

        def slot_label(slot):
            return find(binding[slot]) if slot in binding else slot

        new_factors = tuple((v, tuple(find(l) for l in ls)) for v, ls in t.factors) + \
            tuple((v, tuple(slot_label(s) for s in ss)) for v, ss in factors)
        vl = tuple(slot_label(s) for s in v_slots)
        xl = tuple(find(l) for l in t.xl)
        used = set(vl) | set(xl) | {l for _, ls in new_factors for l in ls}
        scale = t.coeff * coeff
        for label in {find(l) for l in t.vl}:
            if label not in used:  # summed over an axis nothing depends on
                scale *= self.sizes[label]
        return Term(scale, new_factors, vl, xl)

    def _aligned(self, shape, out_shape, v_slots):
        offset = len(out_shape) - len(shape)
        return tuple(v_slots[offset + p] if size == out_shape[offset + p] else self.fresh(size)
                     for p, size in enumerate(shape))

    def locals(self, eqn: Eqn, k: int) -> list:
        """:meth:`local` as a list of terms (empty where the derivative is zero)."""
        local = self.local(eqn, k)
        return [] if local is None else local if isinstance(local, list) else [local]

    def local(self, eqn: Eqn, k: int):
        """The derivative of ``eqn``'s output with respect to its input ``k`` in
        Einstein form: ``(coeff, factors, v_slots, u_slots)`` (slots are fresh
        labels; shared ones say "same index", repeated u slots a diagonal), a
        list of them (a sum), or None where it is zero. ``reshape`` has no such
        form and is handled apart."""
        b, prim, out, u = self.b, eqn.prim, eqn.out, eqn.inputs[k]
        if prim in _ELEMENTWISE_PRIMS:
            partial = _partial(b, prim, eqn.inputs, out, k)
            if partial is None:
                return None
            v_slots = tuple(self.fresh(s) for s in out.shape)
            u_slots = self._aligned(u.shape, out.shape, v_slots)
            if isinstance(partial, Var) and b.literal_value(partial) is not None:
                partial = b.literal_value(partial)
            if isinstance(partial, float):
                return partial, (), v_slots, u_slots
            return 1.0, ((partial, self._aligned(partial.shape, out.shape, v_slots)),), v_slots, u_slots
        if prim == "broadcast":
            v_slots = tuple(self.fresh(s) for s in out.shape)
            return 1.0, (), v_slots, self._aligned(u.shape, out.shape, v_slots)
        if prim == "einsum":
            spec_in, spec_out = eqn.param("spec")
            slots = {}
            for var, ls in zip(eqn.inputs, spec_in):
                for label, size in zip(ls, var.shape):
                    if label not in slots:
                        slots[label] = self.fresh(size)
            coeff, kept = 1.0, []
            for j, (var, ls) in enumerate(zip(eqn.inputs, spec_in)):
                if j == k:
                    continue
                value = b.literal_value(var)
                if value is not None:
                    coeff *= value
                else:
                    kept.append((var, tuple(slots[l] for l in ls)))
            return coeff, tuple(kept), tuple(slots[l] for l in spec_out), tuple(slots[l] for l in spec_in[k])
        if prim in ("sum", "amax", "amin"):
            axes, keepdims = eqn.param("axes"), eqn.param("keepdims")
            u_slots = tuple(self.fresh(s) for s in u.shape)
            v_slots = tuple((self.fresh(1) if keepdims else None) if p in axes else u_slots[p] for p in range(u.ndim))
            v_slots = tuple(s for s in v_slots if s is not None)
            factors = ()
            if prim != "sum":
                mask = b.extremum_mask("argmax_mask" if prim == "amax" else "argmin_mask", u, axes)
                factors = ((mask, u_slots),)
            return 1.0, factors, v_slots, u_slots
        if prim == "transpose":
            u_slots = tuple(self.fresh(s) for s in u.shape)
            return 1.0, (), tuple(u_slots[p] for p in eqn.param("perm")), u_slots
        if prim == "diag_embed":
            u_slots = tuple(self.fresh(s) for s in u.shape)
            return 1.0, (), u_slots + u_slots[-1:], u_slots
        if prim == "getitem":  # selection matrices (the forward rule slices factors instead)
            u_slots = tuple(self.fresh(s) for s in u.shape)
            factors, v_slots, axis = [], [], 0
            for entry in eqn.param("index"):
                if entry[0] == "n":
                    v_slots.append(self.fresh(1))
                    continue
                a, n = u_slots[axis], u.shape[axis]
                axis += 1
                if entry == ("s", 0, n, 1):
                    v_slots.append(a)
                    continue
                select = b.getitem(b.eye(n), (entry, ("s", 0, n, 1)))
                if entry[0] == "s":
                    c = self.fresh(select.shape[0])
                    factors.append((select, (c, a)))
                    v_slots.append(c)
                else:
                    factors.append((select, (a,)))
            return 1.0, tuple(factors), tuple(v_slots), u_slots
        if prim == "concat":
            axis = eqn.param("axis")
            offset = sum(v.shape[axis] for v in eqn.inputs[:k])
            total, n = out.shape[axis], u.shape[axis]
            place = b.getitem(b.eye(total), (("s", 0, total, 1), ("s", offset, offset + n, 1)))
            u_slots = tuple(self.fresh(s) for s in u.shape)
            c = self.fresh(total)
            return 1.0, ((place, (c, u_slots[axis])),), u_slots[:axis] + (c,) + u_slots[axis + 1:], u_slots
        if prim in LINALG:
            return self._linalg_local(eqn, k)
        raise ArrayFormError(f"no derivative rule for the array primitive {prim!r}; use form=\"scalar\"")

    def _linalg_local(self, eqn: Eqn, k: int):
        """Matrix derivative results (M. Giles 2008; as JAX and autograd), in
        Einstein form over stacked matrices (stack labels shared by everything):

            inv       dV = -V dA V
            solve     dX = A⁻¹ (dB - dA X)
            det       dd = d tr(A⁻¹ dA)
            slogdet   d log|det A| = tr(A⁻¹ dA)
            cholesky  dL = L Φ(L⁻¹ dA L⁻ᵀ), Φ: the lower triangle, diagonal halved
            eigh      dλ_i = v_iᵀ dA v_i;  dV = V (F ∘ (Vᵀ dA V)), F_ij = 1/(λ_j - λ_i), F_ii = 0
            eig       dλ = diag(V⁻¹ dA V);  dV = dU - V diag(Vᵀ dU), dU = V (F ∘ (V⁻¹ dA V))
                      (the second term keeps the columns of unit length, as numpy's)
            svd       dσ_i = u_iᵀ dA v_i;  with dS = Uᵀ dA V, F_ij = 1/(σ_j² - σ_i²), F_ii = 0:
                      dU = U (F ∘ (dS Σ + Σ dSᵀ)) + (I - U Uᵀ) dA V Σ⁻¹   (the last if m > n)
                      dV = V (F ∘ (Σ dS + dSᵀ Σ)) + (I - V Vᵀ) dAᵀ U Σ⁻¹  (the last if n > m)
            pinv      dP = -P dA P + P Pᵀ dAᵀ (I - A P) + (I - P A) dAᵀ Pᵀ P   (constant rank)

        Repeated eigenvalues (eig, eigh) or singular values (svd vectors), and a
        zero singular value of a non-square matrix, make F or Σ⁻¹ infinite: the
        derivative is undefined there (as in JAX, whose rules these are).
        cholesky and eigh see a symmetric input: the tracer symmetrizes the
        triangle numpy reads, so dA is symmetric here. Reverse mode through
        ``solve`` solves with Aᵀ instead (see :meth:`adjoints`)."""
        b, prim, out, a = self.b, eqn.prim, eqn.out, eqn.inputs[0]
        n = a.shape[-1]
        stack = tuple(self.fresh(s) for s in a.shape[:-2])
        if prim.startswith("svd") or prim == "pinv":
            return self._rectangular_local(eqn, stack)
        i, j, p, q, r = (self.fresh(n) for _ in range(5))
        if prim == "inv":
            return -1.0, ((out, stack + (i, p)), (out, stack + (q, j))), stack + (i, j), stack + (p, q)
        if prim == "solve":
            inverse = b.linalg("inv", a)
            j = self.fresh(out.shape[-1])
            if k == 1:
                return 1.0, ((inverse, stack + (i, p)),), stack + (i, j), stack + (p, j)
            return -1.0, ((inverse, stack + (i, p)), (out, stack + (q, j))), stack + (i, j), stack + (p, q)
        if prim in ("det", "slogdet"):
            inverse = b.linalg("inv", a)
            factors = ((inverse, stack + (q, p)),)
            if prim == "det":
                factors = ((out, stack),) + factors
            return 1.0, factors, stack, stack + (p, q)
        if prim == "cholesky":
            inverse = b.linalg("inv", out)
            phi = b.constant(np.tril(np.ones((n, n))) - 0.5 * np.eye(n))
            return 1.0, ((out, stack + (i, r)), (phi, (r, j)), (inverse, stack + (r, p)), (inverse, stack + (j, q))), \
                stack + (i, j), stack + (p, q)
        if prim == "eigh_values":
            vectors = b.linalg("eigh_vectors", a)
            return 1.0, ((vectors, stack + (p, i)), (vectors, stack + (q, i))), stack + (i,), stack + (p, q)
        if prim == "eigh_vectors":
            F = self._gap_reciprocals(b.linalg("eigh_values", a))
            return 1.0, ((out, stack + (i, r)), (F, stack + (r, j)), (out, stack + (p, r)), (out, stack + (q, j))), \
                stack + (i, j), stack + (p, q)
        if prim == "eig_values":
            vectors = b.linalg("eig_vectors", a)
            return 1.0, ((b.linalg("inv", vectors), stack + (i, p)), (vectors, stack + (q, i))), stack + (i,), \
                stack + (p, q)
        if prim == "eig_vectors":
            F = self._gap_reciprocals(b.linalg("eig_values", a))
            inverse = b.linalg("inv", out)
            K = b.mul(F, self._product(out, out, stack, transpose_x=True))  # (VᵀV)_ij F_ij
            V_dA_V = ((inverse, stack + (r, p)), (out, stack + (q, j)))  # (V⁻¹ dA V)_rj
            return [(1.0, ((out, stack + (i, r)), (F, stack + (r, j))) + V_dA_V, stack + (i, j), stack + (p, q)),
                    (-1.0, ((out, stack + (i, j)), (K, stack + (r, j))) + V_dA_V, stack + (i, j), stack + (p, q))]
        raise ArrayFormError(f"no derivative rule for the array primitive {prim!r}; use form=\"scalar\"")

    def _rectangular_local(self, eqn: Eqn, stack):
        """svd and pinv of (..., m, n) matrices (see :meth:`_linalg_local`)."""
        b, prim, out, a = self.b, eqn.prim, eqn.out, eqn.inputs[0]
        (m, n), size = a.shape[-2:], min(a.shape[-2:])
        if prim.endswith("_full"):
            raise ArrayFormError(
                f"np.linalg.svd of {m}x{n} matrices with full_matrices=True: the {abs(m - n)} extra singular "
                "vectors (any orthonormal basis of a complement) have no derivative; use "
                "np.linalg.svd(a, full_matrices=False)")
        A = stack + (self.fresh(m), self.fresh(n))  # dA's labels
        if prim == "pinv":
            i, j = self.fresh(n), self.fresh(m)
            P, I_m, I_n = out, b.eye(m), b.eye(n)
            right = b.sub(I_m, self._product(a, P, stack))  # I - A P
            left = b.sub(I_n, self._product(P, a, stack))  # I - P A
            P_Pt, Pt_P = self._product(P, P, stack, transpose_y=True), self._product(P, P, stack, transpose_x=True)
            return [(-1.0, ((P, stack + (i, A[-2])), (P, stack + (A[-1], j))), stack + (i, j), A),
                    (1.0, ((P_Pt, stack + (i, A[-1])), (right, stack + (A[-2], j))), stack + (i, j), A),
                    (1.0, ((left, stack + (i, A[-1])), (Pt_P, stack + (A[-2], j))), stack + (i, j), A)]
        U, s, Vh = b.linalg("svd_u", a), b.linalg("svd_values", a), b.linalg("svd_vh", a)
        i, j = self.fresh(size), self.fresh(size)
        if prim == "svd_values":  # dσ_i = u_iᵀ dA v_i
            return 1.0, ((U, stack + (A[-2], i)), (Vh, stack + (i, A[-1]))), stack + (i,), A
        F = self._gap_reciprocals(b.call("square", s))
        F_right = b.mul(F, b.reshape(s, s.shape[:-1] + (1, size)))  # F_ij σ_j
        F_left = b.mul(F, b.reshape(s, s.shape + (1,)))  # F_ij σ_i
        dS_ij = ((U, stack + (A[-2], i)), (Vh, stack + (j, A[-1])))  # (Uᵀ dA V)_ij
        dS_ji = ((U, stack + (A[-2], j)), (Vh, stack + (i, A[-1])))
        if prim == "svd_u":
            p = self.fresh(m)
            terms = [(1.0, ((U, stack + (p, i)), (F_right, stack + (i, j))) + dS_ij, stack + (p, j), A),
                     (1.0, ((U, stack + (p, i)), (F_left, stack + (i, j))) + dS_ji, stack + (p, j), A)]
            if m > n:
                complement = b.sub(b.eye(m), self._product(U, U, stack, transpose_y=True))
                Vh_scaled = b.div(Vh, b.reshape(s, s.shape + (1,)))
                terms.append((1.0, ((complement, stack + (p, A[-2])), (Vh_scaled, stack + (j, A[-1]))),
                              stack + (p, j), A))
            return terms
        q = self.fresh(n)  # svd_vh: dVh = dVᵀ, labels (j, q)
        terms = [(1.0, ((Vh, stack + (i, q)), (F_left, stack + (i, j))) + dS_ij, stack + (j, q), A),
                 (1.0, ((Vh, stack + (i, q)), (F_right, stack + (i, j))) + dS_ji, stack + (j, q), A)]
        if n > m:
            complement = b.sub(b.eye(n), self._product(Vh, Vh, stack, transpose_x=True))
            U_scaled = b.div(U, b.reshape(s, s.shape[:-1] + (1, size)))
            terms.append((1.0, ((complement, stack + (q, A[-1])), (U_scaled, stack + (A[-2], j))), stack + (j, q), A))
        return terms

    def _gap_reciprocals(self, values: Var) -> Var:
        """F_ij = 1 / (values_j - values_i), F_ii = 0 (no division by zero on the diagonal)."""
        b, n = self.b, values.shape[-1]
        gaps = b.sub(b.reshape(values, values.shape[:-1] + (1, n)), b.reshape(values, values.shape + (1,)))
        eye = b.eye(n)
        return b.sub(b.call("reciprocal", b.add(gaps, eye)), eye)

    def _product(self, x: Var, y: Var, stack, transpose_x=False, transpose_y=False) -> Var:
        """The stacked matrix product x @ y (of xᵀ, yᵀ where asked)."""
        rows, inner = (x.shape[-1], x.shape[-2]) if transpose_x else (x.shape[-2], x.shape[-1])
        i, c, j = self.fresh(rows), self.fresh(inner), self.fresh(y.shape[-2] if transpose_y else y.shape[-1])
        lx = stack + ((c, i) if transpose_x else (i, c))
        ly = stack + ((j, c) if transpose_y else (c, j))
        return self.b.contract((x, y), (lx, ly), stack + (i, j), self.sizes)

    def _solve_adjoint(self, eqn: Eqn, g: Var, k: int) -> Var:
        """Cotangents of solve(A, B) = X: gB = A⁻ᵀ g (a solve with Aᵀ), gA = -gB Xᵀ."""
        b, (a, _), out = self.b, eqn.inputs, eqn.out
        if g.shape != out.shape:
            g = b.broadcast(g, out.shape)
        rank = a.ndim
        g_b = b.linalg("solve", b.transpose(a, tuple(range(rank - 2)) + (rank - 1, rank - 2)), g)
        if k == 1:
            return g_b
        stack = tuple(self.fresh(s) for s in a.shape[:-2])
        i, l, j = self.fresh(a.shape[-1]), self.fresh(a.shape[-1]), self.fresh(out.shape[-1])
        return self.realize(((g_b, stack + (i, j)), (out, stack + (l, j))), -1.0, stack + (i, l))

    def rule(self, eqn: Eqn, D) -> list[Term]:
        terms: list[Term] = []
        for k, u in enumerate(eqn.inputs):
            if u.name not in D:
                continue
            incoming = D[u.name]
            if eqn.prim == "reshape":
                terms += self._reshape(u, eqn.out, incoming)
            elif eqn.prim == "getitem":
                terms += [self._getitem(t, u, eqn.param("index")) for t in incoming]
            else:
                terms += [self.compose(t, *local) for local in self.locals(eqn, k) for t in incoming]
        return terms

    # -- reverse mode ----------------------------------------------------------
    def adjoints(self, seeds, wrt_names) -> dict[str, Var]:
        """One backward sweep: ``seeds`` pairs (output, cotangent) -> the cotangent
        of every variable that depends on the ``wrt_names`` inputs."""
        depends = set(wrt_names)
        for eqn in self.forward:
            if eqn is not None and eqn.prim not in _ZERO_DERIVATIVE and any(v.name in depends for v in eqn.inputs):
                depends.add(eqn.out.name)
        adjoint: dict[str, Var] = {}
        for out, seed in seeds:
            if out.name in depends:
                adjoint[out.name] = seed if out.name not in adjoint else self.b.add(adjoint[out.name], seed)
        seen = set()
        for eqn in reversed(self.forward):
            if eqn is None or eqn.out.name in seen or eqn.out.name not in adjoint:
                continue
            seen.add(eqn.out.name)
            g = adjoint[eqn.out.name]
            for k, u in enumerate(eqn.inputs):
                if u.name not in depends:
                    continue
                if eqn.prim == "reshape":
                    part = self.b.reshape(g, u.shape)
                elif eqn.prim == "solve":
                    part = self._solve_adjoint(eqn, g, k)
                else:
                    parts = [self.realize(factors + ((g, v_slots),), coeff, u_slots)
                             for coeff, factors, v_slots, u_slots in self.locals(eqn, k)]
                    if not parts:
                        continue
                    part = functools.reduce(self.b.add, parts)
                adjoint[u.name] = part if u.name not in adjoint else self.b.add(adjoint[u.name], part)
        return adjoint

    def _reshape(self, u: Var, out: Var, incoming) -> list[Term]:
        kept_u = [p for p, s in enumerate(u.shape) if s != 1]
        kept_v = [p for p, s in enumerate(out.shape) if s != 1]
        if [u.shape[p] for p in kept_u] == [out.shape[p] for p in kept_v]:  # only size-1 axes change
            u_slots = tuple(self.fresh(s) for s in u.shape)
            v_slots = [self.fresh(1) for _ in out.shape]
            for p, q in zip(kept_u, kept_v):
                v_slots[q] = u_slots[p]
            return [self.compose(t, 1.0, (), tuple(v_slots), u_slots) for t in incoming]
        if all(t.vl == t.xl and len(set(t.vl)) == len(t.vl) and not any(set(t.vl) & set(ls) for _, ls in t.factors)
               for t in incoming):
            # u is (a scalar multiple of) the input itself: differentiate with respect to
            # the input viewed in v's shape; results are reshaped back when realised
            terms = []
            for t in incoming:
                labels = tuple(self.fresh(s) for s in out.shape)
                terms.append(Term(t.coeff, t.factors, labels, labels))
            return terms
        # a general reshape: contract the derivative into one dense factor, reshape that
        x_shape = tuple(self.sizes[l] for l in incoming[0].xl)
        dense = self.dense(incoming, u.shape, x_shape)
        factor = self.b.reshape(dense, out.shape + x_shape)
        vl = tuple(self.fresh(s) for s in out.shape)
        xl = tuple(self.fresh(s) for s in x_shape)
        return [Term(1.0, ((factor, vl + xl),), vl, xl)]

    def _getitem(self, t: Term, u: Var, index) -> Term:
        b = self.b
        factors, coeff, vl, axis = list(t.factors), t.coeff, [], 0
        for entry in index:
            if entry[0] == "n":
                vl.append(self.fresh(1))
                continue
            a, n = t.vl[axis], u.shape[axis]
            axis += 1
            if entry == ("s", 0, n, 1):
                vl.append(a)
                continue
            if a in t.xl or t.vl.count(a) > 1:  # the selection itself is the derivative
                eye = b.eye(n)
                if entry[0] == "s":
                    select = b.getitem(eye, (entry, ("s", 0, n, 1)))
                    c = self.fresh(select.shape[0])
                    factors.append((select, (c, a)))
                    vl.append(c)
                else:
                    factors.append((b.getitem(eye, (entry, ("s", 0, n, 1))), (a,)))
                continue
            c = self.fresh(len(range(*entry[1:]))) if entry[0] == "s" else None
            updated = []
            for var, ls in factors:
                if a in ls:
                    var = b.getitem(var, tuple(entry if l == a else ("s", 0, s, 1) for l, s in zip(ls, var.shape)))
                    ls = tuple(l for l in ls if l != a) if c is None else tuple(c if l == a else l for l in ls)
                updated.append((var, ls))
            factors = updated
            if c is not None:
                vl.append(c)
        return Term(coeff, tuple(factors), tuple(vl), t.xl)

    # -- contraction of terms into arrays ------------------------------------
    def realize_unique(self, factors, coeff: float, labels) -> Var:
        """Contract ``coeff · Π factors`` into an array over the distinct ``labels``,
        in order (labels in no factor broadcast)."""
        b = self.b
        unique = tuple(dict.fromkeys(labels))
        present = {l for _, ls in factors for l in ls}
        kept = tuple(l for l in unique if l in present)
        if factors and coeff != 1.0:  # scale the smallest factor, not the result
            at = min(range(len(factors)), key=lambda k: (factors[k][0].size, k))
            factors = list(factors)
            factors[at] = (b.mul(b.literal(coeff), factors[at][0]), factors[at][1])
            coeff = 1.0
        if factors:
            result = b.contract([v for v, _ in factors], [ls for _, ls in factors], kept, self.sizes)
        else:
            result = b.literal(coeff)
        current = list(kept)
        missing = [l for l in unique if l not in present]
        if missing:
            sizes = tuple(self.sizes[l] for l in missing)
            if b.literal_value(result) is None:
                result = b.reshape(result, result.shape + (1,) * len(missing))
            result = b.broadcast(result, tuple(self.sizes[l] for l in current) + sizes)
            current += missing
        return b.transpose(result, [current.index(l) for l in unique])

    def embed(self, result: Var, out_labels) -> Var:
        """An array over the distinct labels of ``out_labels`` placed on its
        diagonals: repeated labels (identities) become diagonal axes."""
        b = self.b
        current = list(dict.fromkeys(out_labels))
        for label in dict.fromkeys(out_labels):
            for _ in range(out_labels.count(label) - 1):
                at = current.index(label)
                order = [p for p in range(len(current)) if p != at] + [at]
                result = b.transpose(result, order)
                current = [current[p] for p in order]
                result = b.diag_embed(result)
                current.append(label)
        taken, perm = set(), []
        for label in out_labels:
            p = next(p for p, l in enumerate(current) if l == label and p not in taken)
            taken.add(p)
            perm.append(p)
        return b.transpose(result, perm)

    def realize(self, factors, coeff: float, out_labels) -> Var:
        """``coeff · Π factors`` as an array whose axes are ``out_labels``."""
        return self.embed(self.realize_unique(factors, coeff, out_labels), tuple(out_labels))

    def dense(self, terms, v_shape, x_shape) -> Var:
        """The sum of ``terms`` as one array of shape v_shape + x_shape; terms with the
        same diagonal pattern are added before they are placed on the diagonal."""
        if not terms:
            return self.b.zeros(tuple(v_shape) + tuple(x_shape))
        groups: dict[tuple, tuple] = {}
        for t in terms:
            labels = t.vl + t.xl
            first = {}
            pattern = tuple(first.setdefault(l, len(first)) for l in labels)
            part = self.realize_unique(t.factors, t.coeff, labels)
            if pattern in groups:
                part = self.b.add(groups[pattern][0], part)
            groups[pattern] = (part, labels)
        total = None
        for part, labels in groups.values():
            placed = self.embed(part, labels)
            placed = self.b.reshape(placed, tuple(v_shape) + tuple(x_shape))  # the input may be seen reshaped
            total = placed if total is None else self.b.add(total, placed)
        return total

    def as_viewed(self, var: Var, t: Term) -> Var:
        """``var`` (shaped like the input) in the shape in which ``t`` sees the input."""
        return self.b.reshape(var, tuple(self.sizes[l] for l in t.xl))

    def dense_term(self, terms, v: Var, x: Var) -> Term:
        dense = self.dense(terms, v.shape, x.shape)
        vl = tuple(self.fresh(s) for s in v.shape)
        xl = tuple(self.fresh(s) for s in x.shape)
        return Term(1.0, ((dense, vl + xl),), vl, xl)


_ELEMENTWISE_PRIMS = frozenset(
    ["add", "sub", "mul", "div", "pow", "neg", "sqrt", "cbrt", "square", "reciprocal", "exp", "exp2", "expm1",
     "log", "log2", "log10", "log1p", "logaddexp", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2",
     "hypot", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "abs", "sign", "maximum", "minimum",
     "heaviside", "where", "cast", "gt", "ge", "lt", "le", "eq", "ne", "and", "or", "xor", "not"])


# --------------------------------------------------------------------------
# the derivative kinds


def _fresh_name(base: str, taken) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}{number}", number + 1
    return name


def _check_wrt(program: ArrayProgram, wrt) -> tuple[int, ...]:
    wrt = tuple(int(j) for j in wrt)
    if not wrt or any(not 0 <= j < len(program.inputs) for j in wrt) or len(set(wrt)) != len(wrt):
        raise ShapeError(f"wrt {wrt} must name distinct arguments of {program.name}")
    return wrt


def _jacobian(program: ArrayProgram, wrt, wrt_is_tuple: bool, name: str, points: bool = True) -> ArrayProgram:
    """``points``: Jacobians are taken at a batch of points of the wrt inputs (the
    other inputs shared by the batch), and contraction orders costed so."""
    d = _Deriver(program, (program.inputs[j].name for j in wrt) if points else None)
    per_wrt = []
    for j in wrt:
        x = program.inputs[j]
        D = d.tangents(x)
        per_wrt.append([d.dense(D.get(d.var(out).name, []), out.shape, x.shape) for out in program.outputs])
    outputs = [per_wrt[j][i] for i in range(len(program.outputs)) for j in range(len(wrt))]
    structure = _nest((program.output_is_tuple, wrt_is_tuple), (len(program.outputs), len(wrt)))
    return program_from(name, d.b, program.inputs, outputs, structure, program.output_is_tuple or wrt_is_tuple)


def _function(program, wrt, wrt_is_tuple):
    return program


def _jacobian_kind(program, wrt, wrt_is_tuple):
    return _jacobian(program, wrt, wrt_is_tuple, program.name)


def _gradient(program, wrt, wrt_is_tuple):
    if program.output_is_tuple or program.outputs[0].shape != ():
        shapes = ", ".join(str(v.shape) for v in program.outputs)
        raise ShapeError(f"gradient needs a function with one scalar output; {program.name} returns shape(s) "
                         f"{shapes} (use symjac.jacobian or symjac.vjp)")
    d = _Deriver(program)  # a scalar objective: typically one point, its data a parameter
    out = d.var(program.outputs[0])
    adjoint = d.adjoints([(out, d.b.literal(1.0))], [program.inputs[j].name for j in wrt])
    outputs = [_adjoint_of(d, adjoint, program.inputs[j]) for j in wrt]
    structure = tuple(range(len(wrt))) if wrt_is_tuple else 0
    return program_from(program.name, d.b, program.inputs, outputs, structure, wrt_is_tuple)


def _adjoint_of(d: _Deriver, adjoint, x: Var) -> Var:
    found = adjoint.get(x.name)
    if found is None:
        return d.b.zeros(x.shape)
    if d.b.literal_value(found) is not None or found.shape != x.shape:
        return d.b.broadcast(found, x.shape)
    return found


def _hessian(program, wrt, wrt_is_tuple):
    # costed for one point: contracting the parameters first (logistic regression's
    # X ⊗ X, data size x d²) would pay only across a large batch of points
    if not program.output_is_tuple and program.outputs[0].shape == ():
        first = _gradient(program, wrt, wrt_is_tuple)  # forward over reverse
    else:
        first = _jacobian(program, wrt, wrt_is_tuple, program.name, points=False)
    flat = ArrayProgram(first.name, first.inputs, first.eqns, first.outputs, tuple(range(len(first.outputs))), True)
    second = _jacobian(flat, wrt, wrt_is_tuple, program.name, points=False)
    structure = _nest((program.output_is_tuple, wrt_is_tuple, wrt_is_tuple),
                      (len(program.outputs), len(wrt), len(wrt)))
    return ArrayProgram(second.name, second.inputs, second.eqns, second.outputs, structure,
                        program.output_is_tuple or wrt_is_tuple)


def _jvp(program, wrt, wrt_is_tuple):
    taken = {v.name for v in program.inputs}
    tangents = []
    for j in wrt:
        x = program.inputs[j]
        name = _fresh_name("v" if not wrt_is_tuple else f"v_{x.name}", taken)
        taken.add(name)
        tangents.append(Var(name, x.shape))
    d = _Deriver(program, [program.inputs[j].name for j in wrt] + [v.name for v in tangents])
    sums = [None] * len(program.outputs)
    for j, tangent in zip(wrt, tangents):
        D = d.tangents(program.inputs[j])
        for i, out in enumerate(program.outputs):
            for t in D.get(d.var(out).name, []):
                part = d.realize(t.factors + ((d.as_viewed(tangent, t), t.xl),), t.coeff, t.vl)
                sums[i] = part if sums[i] is None else d.b.add(sums[i], part)
    outputs = [s if s is not None else d.b.zeros(out.shape) for s, out in zip(sums, program.outputs)]
    return program_from(program.name, d.b, program.inputs + tuple(tangents), outputs,
                        program.structure, program.output_is_tuple)


def _vjp(program, wrt, wrt_is_tuple):
    taken = {v.name for v in program.inputs}
    cotangents = []
    for i, out in enumerate(program.outputs):
        name = _fresh_name(f"u{i}" if program.output_is_tuple else "u", taken)
        taken.add(name)
        cotangents.append(Var(name, out.shape))
    d = _Deriver(program, [program.inputs[j].name for j in wrt] + [v.name for v in cotangents])
    seeds = [(d.var(out), cotangent) for out, cotangent in zip(program.outputs, cotangents)]
    adjoint = d.adjoints(seeds, [program.inputs[j].name for j in wrt])
    outputs = [_adjoint_of(d, adjoint, program.inputs[j]) for j in wrt]
    structure = tuple(range(len(wrt))) if wrt_is_tuple else 0
    return program_from(program.name, d.b, program.inputs + tuple(cotangents), outputs,
                        structure, wrt_is_tuple)


DERIVATIVES = {
    "function": _function,
    "jacobian": _jacobian_kind,
    "hessian": _hessian,
    "gradient": _gradient,
    "jvp": _jvp,
    "vjp": _vjp,
}


def derive(program: ArrayProgram, wrt: tuple[int, ...], wrt_is_tuple: bool, what: str) -> ArrayProgram:
    """The ``what`` derivative of ``program`` with respect to inputs ``wrt``, as a new ArrayProgram."""
    try:
        transform = DERIVATIVES[what]
    except KeyError:
        raise ValueError(f"what must be one of {tuple(DERIVATIVES)}, got {what!r}") from None
    return transform(program, _check_wrt(program, wrt), bool(wrt_is_tuple))

