"""``np.einsum`` on object arrays of sympy expressions.

Used by the tracer's rule table (``ops.py``), which unwraps traced operands
with ``as_values`` and wraps the result again; nothing here knows about
tracing. Accepts every subscript string numpy accepts: explicit ``->`` output
or implicit mode (indices appearing once, in ASCII order, after any ``...``
dimensions), repeated indices within an operand (diagonals, traces), any
number of operands, 0-d operands (``''``), ``...`` and size-1 broadcasting.
:func:`einsum_arguments` also reads numpy's interleaved form
``einsum(a, [0, 1], b, [1, 2], [0, 2])``.

How the sum is built: each operand first takes its diagonals and sums out
the indices no other operand or the output needs; then operands are
contracted pairwise left to right (numpy's order without ``optimize``),
each step keeping only the indices still needed. Every entry of every step
is one ``sympy.Add`` of ``sympy.Mul`` terms, terms with a zero factor left
out. The result is exact — the same sum with its additions grouped as the
pairwise order groups them, as ``A @ B @ C`` would — and a chain like
``'ij,jk,kl->il'`` costs O(n^3) terms per step instead of the O(n^4) of one
sum over every index combination.
"""

from __future__ import annotations

import math
import string

import numpy as np
import sympy

from ..errors import ShapeError, TracingError

__all__ = ["einsum", "einsum_arguments"]

_LETTERS = frozenset(string.ascii_letters)


def einsum(subscripts: str, *operands: np.ndarray) -> np.ndarray:
    """``np.einsum(subscripts, *operands)`` for object ndarrays of sympy expressions."""
    shapes = [np.shape(operand) for operand in operands]
    terms, output = _parse(subscripts, shapes)
    extents = _extents(terms, shapes)
    parts = [_diagonal(np.asarray(op, dtype=object), labels) for op, labels in zip(operands, terms)]
    # Sum out, operand by operand, the indices that nothing else needs.
    for i, (values, labels) in enumerate(parts):
        elsewhere = set(output).union(*(other for j, (_, other) in enumerate(parts) if j != i))
        kept = tuple(label for label in labels if label in elsewhere)
        if kept != labels:
            parts[i] = (_product_sum([(values, labels)], kept, extents), kept)
    values, labels = parts[0]
    for k in range(1, len(parts)):
        needed = set(output).union(*(other for _, other in parts[k + 1:]))
        joined = dict.fromkeys(labels + parts[k][1])
        kept = tuple(label for label in joined if label in needed)
        values, labels = _product_sum([(values, labels), parts[k]], kept, extents), kept
    return _product_sum([(values, labels)], output, extents)


def einsum_arguments(args) -> tuple[str, list]:
    """``(subscripts, operands)`` from either of numpy's calling forms."""
    if not args:
        raise TracingError("np.einsum needs a subscripts string and at least one operand")
    if isinstance(args[0], str):
        return args[0], list(args[1:])
    pairs = len(args) // 2 * 2
    operands, sublists = list(args[0:pairs:2]), [_sublist(s) for s in args[1:pairs:2]]
    output = "->" + _sublist(args[-1]) if len(args) % 2 else ""
    return ",".join(sublists) + output, operands


def _sublist(items) -> str:
    letters = []
    for item in items:
        if item is Ellipsis:
            letters.append("...")
        elif isinstance(item, (int, np.integer)) and 0 <= item < 52:
            letters.append(string.ascii_uppercase[item] if item < 26 else string.ascii_lowercase[item - 26])
        else:
            raise TracingError(f"np.einsum: subscript {item!r} in a sublist must be an int in [0, 52) or Ellipsis")
    return "".join(letters)


# --------------------------------------------------------------------------
# parsing and checking; labels are letters, '...' dimensions are ints -1, -2, ...


def _parse(subscripts: str, shapes) -> tuple[list[tuple], tuple]:
    """Input label tuples, one per operand, and the output label tuple."""
    if not isinstance(subscripts, str):
        raise TracingError(f"np.einsum: subscripts must be a string, got {type(subscripts).__name__}")
    text = subscripts.replace(" ", "")
    if text.count("->") > 1 or text.replace("->", "").count("-") or text.replace("->", "").count(">"):
        raise TracingError(f"np.einsum: subscripts {subscripts!r} must contain at most one '->' and no other '-' or '>'")
    inputs, arrow, output_text = text.partition("->")
    texts = inputs.split(",")
    if len(texts) != len(shapes):
        raise TracingError(
            f"np.einsum: subscripts {subscripts!r} name {len(texts)} operand(s) but {len(shapes)} were given"
        )
    terms = [_term(term, len(shape), f"operand {i}") for i, (term, shape) in enumerate(zip(texts, shapes))]
    broadcast = max((-min((label for label in term if isinstance(label, int)), default=0) for term in terms), default=0)
    ellipsis = tuple(range(-broadcast, 0))
    if not arrow:
        letters = [label for term in terms for label in term if isinstance(label, str)]
        return terms, ellipsis + tuple(sorted(label for label in set(letters) if letters.count(label) == 1))
    output = _term(output_text, None, "the output")
    if "..." in output_text:
        at = output.index(None)
        output = output[:at] + ellipsis + output[at + 1:]
    elif broadcast:
        raise TracingError(
            f"np.einsum: the output of {subscripts!r} has no '...' although the inputs broadcast over "
            "'...' dimensions; add '...' to the output"
        )
    for label in output:
        if output.count(label) > 1:
            raise TracingError(f"np.einsum: output index {label!r} appears more than once in {subscripts!r}")
        if not any(label in term for term in terms):
            raise TracingError(f"np.einsum: output index {label!r} of {subscripts!r} appears in no input")
    return terms, output


def _term(text: str, ndim, where: str) -> tuple:
    """Labels of one term; '...' expands to ints -k..-1 (or None when ndim is unknown)."""
    head, dots, tail = text.partition("...")
    for char in head + tail:
        if char not in _LETTERS:
            what = "a '.' that is not part of '...'" if char == "." else f"{char!r}, which is not a letter"
            raise TracingError(f"np.einsum: the subscripts of {where} contain {what}")
    if ndim is None:
        return tuple(head) + ((None,) if dots else ()) + tuple(tail)
    extra = ndim - len(head) - len(tail)
    if extra < 0 or (extra and not dots):
        raise ShapeError(
            f"np.einsum: {where} has {ndim} dimension(s) but its subscripts {text!r} name "
            f"{len(head) + len(tail)}{' and no ...' if not dots else ''}"
        )
    return tuple(head) + tuple(range(-extra, 0)) + tuple(tail)


def _name(label) -> str:
    return f"index {label!r}" if isinstance(label, str) else "a '...' dimension"


def _extents(terms, shapes) -> dict:
    """Length of every index; across operands a length of 1 broadcasts as in numpy."""
    extents, source = {}, {}
    for i, (labels, shape) in enumerate(zip(terms, shapes)):
        own = {}
        for label, extent in zip(labels, shape):
            if own.setdefault(label, extent) != extent:
                raise ShapeError(
                    f"np.einsum: operand {i} repeats {_name(label)} over axes of different "
                    f"lengths ({own[label]} != {extent})"
                )
        for label, extent in own.items():
            known = extents.get(label)
            if known is None or known == 1:
                extents[label], source[label] = extent, i
            elif extent not in (1, known):
                raise ShapeError(
                    f"np.einsum: {_name(label)} has length {known} in operand {source[label]} "
                    f"but {extent} in operand {i}"
                )
    return extents


def _diagonal(values: np.ndarray, labels: tuple) -> tuple[np.ndarray, tuple]:
    """Take the diagonal over every index repeated within one operand."""
    unique = tuple(dict.fromkeys(labels))
    if unique == labels:
        return values, labels
    lengths = dict(zip(labels, values.shape))  # equal for a repeated index: checked by _extents
    grid = np.indices(tuple(lengths[label] for label in unique), sparse=True)
    return values[tuple(grid[unique.index(label)] for label in labels)], unique


# --------------------------------------------------------------------------
# the one kernel: out[kept] = sum over the other indices of the product


def _aligned(values: np.ndarray, labels: tuple, order: tuple, shape: tuple) -> np.ndarray:
    """A read-only view of ``values`` with its axes in ``order``, broadcast to ``shape``."""
    moved = np.transpose(values, sorted(range(len(labels)), key=lambda axis: order.index(labels[axis])))
    lengths = dict(zip(sorted(labels, key=order.index), moved.shape))
    return np.broadcast_to(moved.reshape(tuple(lengths.get(label, 1) for label in order)), shape)


def _product_sum(parts, kept: tuple, extents: dict) -> np.ndarray:
    """Entries over ``kept``: one Add of the products of the parts over the summed indices."""
    summed = tuple(label for label in dict.fromkeys(l for _, labels in parts for l in labels) if label not in kept)
    shape = tuple(extents[label] for label in kept)
    if len(parts) == 1 and not summed:
        return np.transpose(parts[0][0], [parts[0][1].index(label) for label in kept]).copy()
    rows, width = math.prod(shape), math.prod(extents[label] for label in summed)
    full = shape + tuple(extents[label] for label in summed)
    columns = [_aligned(values, labels, kept + summed, full).reshape(rows, width) for values, labels in parts]
    zero = sympy.S.Zero
    result = np.empty(rows, dtype=object)
    for row in range(rows):
        result[row] = sympy.Add(*[
            sympy.Mul(*factors) for factors in zip(*(column[row] for column in columns))
            if all(factor is not zero for factor in factors)
        ])
    return result.reshape(shape)
