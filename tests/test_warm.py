"""Warm starts without tracing (build/warm.py): a function keyed by itself.

The key must miss on any change that can change the trace — a closure
value, a global, a helper the function calls, a default argument, a numpy
version — and hit in a new process for the same function, which then
loads its build without tracing. What cannot be hashed reliably makes the
function un-keyable (traced as before), never a wrong hit.
"""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

import symjac
from symjac import api
from symjac.build import builder, warm
from symjac.options import Options

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = Options(backend="cython", flags=("-O0",))

SCALE = 2.0


def helper(x):
    return np.sin(x) * SCALE


def uses_helper(x):
    return helper(x) + x[0]


def with_default(x, c=3.0):
    return x * c


def closure(c):
    def f(x):
        return np.tanh(c @ x)
    return f


def key(function, **shapes):
    return warm.function_key("jacobian", function, (), shapes or {"x": 3}, None, ("jacobian",), OPTIONS)


def test_the_same_function_gives_the_same_key_and_every_input_changes_it(monkeypatch):
    W = np.arange(6.0).reshape(2, 3)
    base = key(closure(W))
    assert base is not None and base == key(closure(W.copy()))
    changed = W.copy()
    changed[1, 2] += 1e-12
    assert key(closure(changed)) != base                              # a closure value
    assert key(closure(W.astype(np.float32))) != base                 # its dtype
    assert key(closure(W), x=(3,)) == base and key(closure(W), x=4) != base  # shapes, 3 == (3,)

    first = key(uses_helper)
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 2.5)          # a global read by a called helper
    assert key(uses_helper) not in (None, first)
    monkeypatch.undo()
    assert key(uses_helper) == first

    def other_helper(x):
        return np.cos(x) * SCALE
    monkeypatch.setattr(sys.modules[__name__], "helper", other_helper)  # the called helper itself
    assert key(uses_helper) not in (None, first)
    monkeypatch.undo()

    default = key(with_default)
    monkeypatch.setattr(with_default, "__defaults__", (4.0,))          # a default argument
    assert key(with_default) not in (None, default)
    monkeypatch.undo()

    monkeypatch.setattr(np, "__version__", "0.0.1")                   # numpy's version
    assert key(uses_helper) not in (None, first)
    monkeypatch.undo()

    assert warm.function_key("hessian", uses_helper, (), {"x": 3}, None, ("hessian",), OPTIONS) != first
    assert warm.function_key("jacobian", uses_helper, (), {"x": 3}, None, ("jacobian",),
                             OPTIONS.with_(native=False)) != first
    assert warm.function_key("jacobian", uses_helper, (), {"x": 3}, None, ("jacobian",),
                             OPTIONS.with_(verbose=True)) == first    # verbose changes nothing built


def test_code_changes_miss():
    def a(x):
        return np.sin(x) + 1.0

    def b(x):
        return np.sin(x) + 1.5

    def c(x):
        return np.cos(x) + 1.0

    def d(x):
        return sum(v for v in (np.sin(x) + 1.0, x))      # nested code (a generator) is part of the code

    keys = [key(f) for f in (a, b, c, d)]
    assert None not in keys and len(set(keys)) == 4
    c.__name__ = "a"
    assert key(c) != keys[2]  # the name is printed into the module


class Parameters:
    def __init__(self, w):
        self.w = w


def test_what_cannot_be_hashed_reliably_is_traced_as_before():
    params = Parameters(np.ones(3))

    def reads_an_object(x):
        return x * params.w

    def writes_a_global(x):
        global SCALE
        SCALE = 3.0
        return x

    def reads_by_name(x):
        return x * getattr(sys.modules[__name__], "SCALE")

    assert key(reads_an_object) is None
    assert key(writes_a_global) is None
    assert key(reads_by_name) is None
    assert key(lambda x: x * np.array([object()] * 3)) is not None  # built inside: part of the code, not a value
    holder = np.array([object()] * 3)
    assert key(lambda x: x * holder) is None
    assert warm.function_key("jacobian", params, (), {"x": 3}, None, ("jacobian",), OPTIONS) is None

    def recursive(x, n=2):
        return x if n == 0 else recursive(np.sin(x), n - 1)
    assert key(recursive) is not None  # a function that calls itself: a back-reference


def test_an_in_process_hit_is_the_same_build_and_traces_only_when_asked(monkeypatch):
    W = np.random.default_rng(1).normal(size=(2, 3))
    f = closure(W)
    first = symjac.jacobian(f, x=3, flags=("-O0",))  # a build, or a hit from an earlier run's cache
    nonzeros = first.derivative.nonzeros
    traced = []
    monkeypatch.setattr(api, "_trace_stage", lambda *a: (traced.append(a), TRACE(*a))[1])
    second = symjac.jacobian(f, x=3, flags=("-O0",))
    assert traced == [] and second.source == first.source
    x = np.array([0.1, -0.2, 0.3])
    np.testing.assert_array_equal(second(x), first(x))
    assert second.derivative.nonzeros == nonzeros and len(traced) == 1
    # a changed closure value misses (and is right)
    W2 = W * 2
    g = closure(W2)
    third = symjac.jacobian(g, x=3, flags=("-O0",))
    np.testing.assert_allclose(third(x), (1 - np.tanh(2 * W @ x) ** 2)[:, None] * 2 * W, rtol=1e-14)
    # mutated in place after a hit: the lazy symbolic form refuses to disagree with the build
    fourth = symjac.jacobian(g, x=3, flags=("-O0",))
    W2 *= 3
    with pytest.raises(ValueError, match="no longer traces to the program"):
        fourth.derivative


TRACE = api._trace_stage

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, symjac
    from symjac import api
    trace, traced = api._trace_stage, []
    api._trace_stage = lambda *a: (traced.append(1), trace(*a))[1]
    SCALE, RUN = float(sys.argv[1]), sys.argv[2]
    W = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    def layer(h):
        return np.tanh(W @ h) * SCALE
    def decoder(z, p):
        RUN  # a global read: this test run's own key (the run's shared cache may hold others)
        return layer(z) * p[0]
    jac = symjac.jacobian(decoder, z=3, p=1, wrt="z", flags=("-O0",))
    J = jac(np.array([0.1, 0.2, 0.3]), np.array([2.0]))
    after_call = len(traced)
    symbolic = jac.derivative.nonzeros
    print(json.dumps({"traced": after_call, "J": J.tolist(), "nonzeros": symbolic}))
    """
)


def test_a_new_process_with_the_same_function_loads_without_tracing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the run's cache: its kernel runtime is reused
    env.pop("SYMJAC_DEBUG", None)
    nonce = uuid.uuid4().hex

    def run(scale):
        done = subprocess.run([sys.executable, "-c", _SCRIPT, scale, nonce], env=env, capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cold, warm_run, changed = run("1.0"), run("1.0"), run("1.5")
    assert cold["traced"] == 1 and warm_run["traced"] == 0 and changed["traced"] == 1
    assert warm_run["J"] == cold["J"] and warm_run["nonzeros"] == cold["nonzeros"] == 12
    np.testing.assert_allclose(np.array(changed["J"]), 1.5 * np.array(cold["J"]), rtol=1e-14)
