"""``front/fast_floats.py``: the same answers as sympy's assumption system, and sympy restored after."""

import math
import struct

import numpy as np
import sympy

from symjac.front.fast_floats import fast_float_zero

VALUES = [0.0, -0.0, 1.5, -1.5, 1e-300, -1e-300, 5e-324, -5e-324, 1.7976931348623157e308, -2.5e-7]


def _answers(value):
    number = sympy.Float(value)
    return number.is_zero, number.is_extended_negative, number.is_negative, number.is_nonzero


def test_answers_are_sympys():
    rng = np.random.default_rng(5)
    bits = rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64)
    values = VALUES + [v for v in (struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in bits) if math.isfinite(v)]
    expected = [_answers(value) for value in values]
    with fast_float_zero():
        assert [_answers(value) for value in values] == expected
        assert (sympy.Float(2.0) * sympy.Symbol("x")).is_zero is None  # products keep asking sympy


def _sums():
    x, y, z = sympy.symbols("x y z", real=True)
    p, k, c = sympy.Symbol("p", positive=True), sympy.Symbol("k", integer=True), sympy.Symbol("c")
    half = sympy.Rational(1, 2)
    return [
        x + y, 0.5 * x - 2.25 * y + 1.5, half * x + 3, -x - y - z, x + 1e-300, 2 * x - 7,  # affine: answered at once
        x**2 + 1, x**2 + y**2, p + 1, p - 1, k + half, c + 1, x + sympy.I, x + sympy.pi, x + sympy.oo,
        sympy.sin(x) + 1, x * y + 1, sympy.Abs(x) + 1, -sympy.Abs(x) - 1, 2 * p + 3 * p**2,
    ]


def test_sums_are_sympys():
    expected = [total.is_zero for total in _sums()]
    sympy.core.cache.clear_cache()  # new objects: no facts remembered from above
    with fast_float_zero():
        assert [total.is_zero for total in _sums()] == expected
    assert expected[:6] == [None] * 6


def test_hashes_are_sympys():
    numbers = [sympy.Float(value) for value in VALUES + [math.inf, -math.inf, math.nan]] + [sympy.Float("0.1", 30)]
    expected = [hash(number) for number in numbers]
    with fast_float_zero():
        assert [hash(number) for number in numbers] == expected
        assert [hash(number) for number in numbers] == expected  # remembered
        fresh = [sympy.Float(value) for value in VALUES]
        assert {number: 1 for number in fresh} == {number: 1 for number in numbers[:len(VALUES)]}
    assert [hash(number) for number in numbers] == expected


def test_sympy_is_restored_after_nested_use():
    plain = sympy.Float.__dict__.get("is_zero"), sympy.Float.__dict__.get("is_extended_negative")
    plain_hash = sympy.Float.__hash__
    assert "is_zero" not in sympy.Add.__dict__
    with fast_float_zero():
        with fast_float_zero():
            pass
        assert "is_zero" in sympy.Float.__dict__  # still inside the outer block
    assert (sympy.Float.__dict__.get("is_zero"), sympy.Float.__dict__.get("is_extended_negative")) == plain
    assert sympy.Float.__hash__ is plain_hash
    assert "is_zero" not in sympy.Add.__dict__
    try:
        with fast_float_zero():
            raise ValueError
    except ValueError:
        pass
    assert "is_zero" not in sympy.Float.__dict__
