"""Pickling compiled objects: what multiprocessing, concurrent.futures and
Dask workers rely on (DESIGN.md, "More than one machine").

A compiled object pickles by its generated source and build options, never
by the compiled file. These tests unpickle in fresh interpreters with empty
build caches (the module is built there, once), in four processes at once
(one cache entry results), on the numpy backend (nothing to build), and where
no compiler exists (a BuildError naming the compiler and the fallback).
"""

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import symjac
from shipping import calls, flat, invoke, objects, pair_jacobian, sample_arguments

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600

# Unpickles a list of (name, object, [(label, method, args)]) from argv[1],
# evaluates every call and pickles the results to argv[2]. It imports only
# numpy and pickle itself: symjac is imported by unpickling.
CHILD = textwrap.dedent("""
    import pickle, sys
    with open(sys.argv[1], "rb") as handle:
        jobs = pickle.load(handle)
    again = pickle.loads(open(sys.argv[1], "rb").read())  # a second unpickle must not build again
    results = {}
    for (name, obj, work), (_, twin, _) in zip(jobs, again):
        assert type(obj).__name__ == type(twin).__name__ and obj._module is twin._module
        for label, method, args in work:
            results[name, label] = (getattr(obj, method) if method else obj)(*args)
    with open(sys.argv[2], "wb") as handle:
        pickle.dump(results, handle)
""")


def _child_env(cache, **extra):
    env = dict(os.environ, SYMJAC_CACHE_DIR=str(cache), SYMJAC_DEBUG="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _jobs(named):
    jobs, expected = [], {}
    for name, obj in named.items():
        args = sample_arguments(name, batch=(4,))
        work = [(label, method, args) for label, method in calls(name)]
        jobs.append((name, obj, work))
        for label, method in calls(name):
            expected[name, label] = invoke(obj, method, args)
    return jobs, expected


def _run_child(tmp_path, jobs, cache, tag="child", **extra):
    job_file, result_file = tmp_path / f"{tag}-jobs.pkl", tmp_path / f"{tag}-results.pkl"
    job_file.write_bytes(pickle.dumps(jobs))
    done = subprocess.run([sys.executable, "-c", CHILD, str(job_file), str(result_file)], env=_child_env(cache, **extra),
                          capture_output=True, text=True, timeout=TIMEOUT)
    return done, result_file


def _assert_same(results, expected):
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        got = flat(results[key])
        want = flat(value)
        assert len(got) == len(want), key
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


def _entries(cache):
    """The cache's model entries (not the shared kernel runtime, built once per
    toolchain, nor compiled templates)."""
    return sorted(p.name for p in Path(cache).iterdir() if not p.name.startswith(("runtime-", "templates-")))


def _model_lines(stderr, what):
    """Debug-log lines saying ``what`` ("cache hit"/"cache miss") about model entries."""
    return sum(1 for line in stderr.splitlines()
               if what in line and "/runtime-" not in line and "/templates-" not in line)


def test_every_kind_round_trips_in_this_process():
    for name, obj in objects("cython").items():
        twin = pickle.loads(pickle.dumps(obj))
        assert twin._public_class is obj._public_class and isinstance(twin, obj._public_class)
        assert twin.signature.names == obj.signature.names and twin.wrt == obj.wrt
        assert twin.content_hash == obj.content_hash and twin.backend == "cython"
        assert twin.derivative is None  # the symbolic form stays behind
        args = sample_arguments(name, batch=(5,))
        for _, method in calls(name):
            for a, b in zip(flat(invoke(twin, method, args)), flat(invoke(obj, method, args))):
                np.testing.assert_array_equal(a, b)
        assert pickle.loads(pickle.dumps(twin)).content_hash == obj.content_hash  # pickles again


def test_fresh_process_with_an_empty_cache_builds_each_module_once(tmp_path):
    cache = tmp_path / "cache"
    jobs, expected = _jobs(objects("cython"))
    done, result_file = _run_child(tmp_path, jobs, cache)
    assert done.returncode == 0, done.stderr
    _assert_same(pickle.loads(result_file.read_bytes()), expected)
    assert _model_lines(done.stderr, "cache miss") == len(jobs), done.stderr  # one build per module, not per unpickle
    entries = _entries(cache)
    assert len(entries) == len(jobs) and not [e for e in entries if e.startswith(".")]
    # Another fresh process on that cache builds nothing.
    again, result_file = _run_child(tmp_path, jobs, cache, tag="again")
    assert again.returncode == 0, again.stderr
    assert _model_lines(again.stderr, "cache hit") == len(jobs) and "cache miss" not in again.stderr
    _assert_same(pickle.loads(result_file.read_bytes()), expected)


def test_four_processes_unpickle_at_once_into_one_entry(tmp_path):
    cache = tmp_path / "cache"
    jobs, expected = _jobs({"jacobian": objects("cython")["jacobian"]})
    job_file = tmp_path / "jobs.pkl"
    job_file.write_bytes(pickle.dumps(jobs))
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(job_file), str(tmp_path / f"out{i}.pkl")],
                                 env=_child_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(4)]
    try:
        outputs = [child.communicate(timeout=TIMEOUT) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, err) in zip(children, outputs):
        assert child.returncode == 0, err
    for i in range(4):
        _assert_same(pickle.loads((tmp_path / f"out{i}.pkl").read_bytes()), expected)
    assert len(_entries(cache)) == 1, _entries(cache)  # losers of the race dropped their builds


def test_numpy_backend_needs_no_compiler_on_the_receiving_side(tmp_path):
    named = dict(objects("numpy"), pair=pair_jacobian("numpy"))
    jobs, expected = _jobs(named)
    done, result_file = _run_child(tmp_path, jobs, tmp_path / "cache", CC="/nonexistent/cc")
    assert done.returncode == 0, done.stderr
    _assert_same(pickle.loads(result_file.read_bytes()), expected)
    assert "cache miss" not in done.stderr  # nothing was compiled or cached


def test_unbuildable_on_the_receiving_side_is_a_clear_build_error(tmp_path):
    jac = objects("cython")["jacobian"]
    job_file = tmp_path / "jac.pkl"
    job_file.write_bytes(pickle.dumps(jac))
    script = textwrap.dedent("""
        import pickle, sys
        import symjac
        try:
            pickle.loads(open(sys.argv[1], "rb").read())
        except symjac.BuildError as error:
            print("BuildError:", error.args[0].splitlines()[0])
            print("COMMAND:", error.command)
            raise SystemExit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(job_file)],
                          env=_child_env(tmp_path / "cache", CC="/nonexistent/cc"),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 3, done.stdout + done.stderr
    message = done.stdout
    assert "C compiler" in message and "could not be started" in message
    assert "/nonexistent/cc" in message  # the command that failed
    assert "backend='numpy'" in message and "unpickled jacobian" in message


def test_build_error_survives_pickling():
    # Errors raised on a Dask worker travel back to the client pickled.
    error = symjac.BuildError("the C compiler failed", command=["cc", "x.c"], log="x.c:1: error")
    twin = pickle.loads(pickle.dumps(error))
    assert isinstance(twin, symjac.BuildError) and isinstance(twin, RuntimeError)
    assert twin.command == ["cc", "x.c"] and twin.log == "x.c:1: error" and str(twin) == str(error)


def test_the_cache_directory_does_not_travel():
    """A pickle carries the source and the Options, which name no path: the
    receiving process uses its own cache (SYMJAC_CACHE_DIR or the user's)."""
    from dataclasses import fields

    jac = pickle.loads(pickle.dumps(objects("numpy")["jacobian"]))
    _, (cls, source, options) = jac.__reduce__()
    assert cls is symjac.Jacobian and options == jac.options
    assert not any(isinstance(getattr(options, field.name), os.PathLike) or "dir" in field.name
                   for field in fields(options))


def test_process_pool_executor():
    import concurrent.futures
    import multiprocessing

    jac = objects("cython")["jacobian"]
    args = sample_arguments("jacobian", batch=(3, 2))
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_evaluate, [jac] * 2, [args] * 2, timeout=TIMEOUT))
    for result in results:
        np.testing.assert_array_equal(result, jac(*args))


def _evaluate(obj, args):
    return obj(*args)


TORCH_CHILD = textwrap.dedent("""
    import pickle, sys, torch
    tj, h, W, J, grad = pickle.loads(open(sys.argv[1], "rb").read())
    h = h.clone().requires_grad_(True)
    again = tj(h=h, W=W)
    (again ** 2).sum().backward()
    assert torch.equal(again.detach(), J) and torch.allclose(h.grad, grad, rtol=1e-12, atol=0)
    print("ok", type(tj).__name__)
""")


def _torch_decoder(h, W):
    return np.tanh(W @ h)


def test_torch_objects_pickle_and_load_in_a_fresh_process_with_an_empty_cache(tmp_path):
    import torch
    import symjac.torch

    tj = symjac.torch.jacobian(_torch_decoder, h=2, W=(3, 2), verbose=False)
    h = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    W = torch.tensor([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.7]], dtype=torch.float64)
    J = tj(h, W)
    (J ** 2).sum().backward()
    payload = tmp_path / "torch.pkl"
    payload.write_bytes(pickle.dumps((tj, h.detach(), W, J.detach(), h.grad)))
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    done = subprocess.run([sys.executable, "-c", TORCH_CHILD, str(payload)], env=_child_env(cache),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok TorchFunction"
    assert len(_entries(cache)) >= 2  # the forward's and the backward's kernels were built there
