"""Compiled derivatives on Dask arrays (symjac/dask.py), on threads and on a
``dask.distributed`` cluster of worker processes.

Every call kind of every derivative object, over several chunk layouts and
with numpy or Dask parameters, must give exactly the numpy call's numbers:
a task runs the same kernel on a slice of the batch, and a kernel computes
a point alike wherever it falls in a batch (tests/test_lanes.py). The
cluster tests use two single-threaded worker processes on 127.0.0.1; one
kills a worker in the middle of a computation.
"""

import os
import pickle
import signal
import time

import numpy as np
import pytest

import dask  # the test extra installs dask, distributed and zarr: these tests never skip
import dask.array as da
import distributed

import symjac
import symjac.adapters.dask
import symjac.dask
from shipping import K_ROBER, calls, flat, invoke, objects, pair_jacobian, rober, sample_arguments

TIMEOUT = 180


def _all_objects():
    return dict(objects("cython"), pair=pair_jacobian("numpy"))


CASES = [(name, label, method) for name in ("jacobian", "hessian", "gradient", "jvp", "vjp", "pair")
         for label, method in calls(name)]


def _layouts(obj, args):
    """(description, dask-or-numpy arguments, numpy arguments) for several
    chunkings of the batch, broadcasting, and Dask parameters. ``args`` has a
    batch of 24 on its batched arguments (the first is the state)."""
    cores = [len(shape) for shape in obj.signature.shapes]
    batched = [a.ndim > c for a, c in zip(args, cores)]
    first_param = batched.index(False)

    def grid(a, c, shape):
        return a.reshape(shape + a.shape[a.ndim - c:])

    layouts = []
    # 1. the state chunked along a 1-D batch (uneven chunks), the rest numpy
    layouts.append(("1-D batch, uneven chunks", [da.from_array(args[0], chunks=(5, -1))] + list(args[1:]), args))
    # 2. a 2-D batch chunked on both axes; the state's core axis is chunked too (rechunked)
    args2 = [grid(a, c, (4, 6)) if b else a for a, c, b in zip(args, cores, batched)]
    layouts.append(("2-D batch, core axis chunked", [da.from_array(args2[0], chunks=(3, 2, 1))] + args2[1:], args2))
    # 3. broadcasting: state (4, 1) dask, other batched arguments (6,) numpy, a parameter (1, 6) numpy
    args3 = [args2[0][:, :1]] + [a[0] if b else a for a, b in zip(args2[1:], batched[1:])]
    param = args3[first_param]
    args3[first_param] = param * (1 + np.arange(6.0) / 64).reshape((1, 6) + (1,) * param.ndim)
    layouts.append(("broadcast (4,1) x (6,) x (1,6)", [da.from_array(args3[0], chunks=(2, 1, -1))] + args3[1:], args3))
    # 4. everything dask, the parameters too, batched arguments chunked differently (chunks unified)
    lazy4 = [da.from_array(a, chunks=(7 + 4 * i,) + (-1,) * c) if b else da.from_array(a)
             for i, (a, c, b) in enumerate(zip(args, cores, batched))]
    layouts.append(("all dask, mismatched chunks", lazy4, args))
    return layouts


def _structure(result):
    return tuple(map(_structure, result)) if isinstance(result, tuple) else "array"


@pytest.mark.parametrize("name,label,method", CASES, ids=[f"{n}-{l}" for n, l, _ in CASES])
def test_every_kind_equals_the_numpy_call_to_the_last_bits(name, label, method):
    obj = _all_objects()[name]
    args = sample_arguments(name, batch=(24,), seed=1)
    for description, lazy_args, numpy_args in _layouts(obj, args):
        lazy = invoke(obj, method, lazy_args)
        expected = invoke(obj, method, numpy_args)
        assert _structure(lazy) == _structure(expected)  # nested alike (tuples of tuples)
        lazy_flat, expected_flat = flat(lazy), flat(expected)
        assert all(isinstance(item, da.Array) for item in lazy_flat), description
        computed = dask.compute(*lazy_flat, scheduler="threads", num_workers=2)
        for got, want, item in zip(computed, expected_flat, lazy_flat):
            assert item.shape == want.shape and item.dtype == np.float64, description
            np.testing.assert_array_equal(got, want, err_msg=description)


def test_batch_chunks_are_kept_and_core_dimensions_are_one_chunk():
    jac = objects("cython")["jacobian"]
    Y = da.from_array(sample_arguments("jacobian", batch=(10, 12))[0], chunks=(3, 5, 2))
    J = jac(Y, K_ROBER)
    assert J.chunks == (Y.chunks[0], Y.chunks[1], (3,), (3,))
    value, J2 = jac.function_and_jacobian(Y, K_ROBER)
    assert value.chunks == (Y.chunks[0], Y.chunks[1], (3,)) and J2.chunks == J.chunks


def test_a_single_point_as_a_dask_array():
    jac = objects("cython")["jacobian"]
    y, k = sample_arguments("jacobian")
    J = jac(da.from_array(y), k)  # passes the compiled single-point entry, which falls back
    assert isinstance(J, da.Array) and J.shape == (3, 3)
    np.testing.assert_array_equal(J.compute(scheduler="sync"), jac(y, k))


def test_nothing_runs_until_compute_and_meta_is_given(monkeypatch):
    jac = objects("cython")["jacobian"]
    Y = da.from_array(sample_arguments("jacobian", batch=(20,))[0], chunks=5)

    def refuse(*args, **kwargs):
        raise AssertionError("the kernel ran while the graph was built")

    monkeypatch.setattr(symjac.dask.Kernel, "__call__", refuse)
    J = jac(Y, K_ROBER)
    f, J2 = jac.function_and_jacobian(Y, K_ROBER)
    assert J._meta.shape == (0, 0, 0) and J._meta.dtype == np.float64 and f._meta.ndim == 2
    monkeypatch.undo()
    np.testing.assert_array_equal(J.compute(), jac(Y.compute(), K_ROBER))


def test_small_parameters_and_the_kernel_go_into_each_task_so_dask_fuses_the_chain():
    """A small parameter and the kernel are written into the tasks, so each
    task depends on its blocks only, and Dask's linear fusion merges the
    block's producer, the kernel and its consumer into one task per chunk;
    tasks run one kernel thread."""
    jac = objects("cython")["jacobian"]
    k = K_ROBER * np.array([1.0, 1.0 + 2**-40, 1.0])
    Y = da.from_array(sample_arguments("jacobian", batch=(40,))[0], chunks=4)
    total = (jac(Y * 1.0, k) ** 2).sum(axis=(1, 2))  # multiply, kernel, square, sum: a chain per chunk
    (fused,) = dask.optimize(total)
    graph = dict(fused.__dask_graph__())
    kernel_tasks = [key for key in graph if "run_block" in str(key)]
    assert len(kernel_tasks) == 10, kernel_tasks  # one per chunk, nothing left of the chain outside it
    assert all("array-mul-run_block-sum" in str(key) for key in kernel_tasks), kernel_tasks  # source to sum
    assert _kernel_of(jac(Y, k)).num_threads == 1  # (its repr names no threads: a test of it could never hold)
    assert _kernel_of(jac(Y, k, num_threads=2)).num_threads == 2  # the override
    np.testing.assert_array_equal(total.compute(scheduler="sync"),
                                  (jac(Y.compute(), k) ** 2).sum(axis=(1, 2)))


def test_large_parameters_and_kernels_are_single_graph_keys(monkeypatch):
    """Above EMBED_BYTES a numpy parameter is stored once in the graph (every
    task refers to its key), and so is the compiled object."""
    monkeypatch.setattr(symjac.adapters.dask, "EMBED_BYTES", 16)
    jac = objects("cython")["jacobian"]
    k = K_ROBER * np.array([1.0, 1.0 + 2**-40, 1.0])  # a recognisable byte pattern
    Y = da.from_array(sample_arguments("jacobian", batch=(40,))[0], chunks=4)
    J = jac(Y, k)
    graph = dict(J.__dask_graph__())
    holding_k = [key for key, value in graph.items() if k.tobytes() in pickle.dumps(value)]
    assert len(holding_k) == 1, holding_k
    kernels = [value for value in graph.values() if "symjac.dask.Kernel" in repr(value)]
    assert len(kernels) == 1
    np.testing.assert_array_equal(J.compute(scheduler="sync"), jac(Y.compute(), k))


def _kernel_of(lazy):
    """The Kernel a lazy result's tasks call: a graph key or a task argument."""
    for value in dict(lazy.__dask_graph__()).values():
        for inner in (getattr(value, "value", value), *getattr(value, "kwargs", {}).values()):
            if isinstance(inner, symjac.dask.Kernel):
                return inner
    raise AssertionError("no kernel in the graph")


def test_errors_are_raised_when_the_graph_is_built():
    jac = objects("cython")["jacobian"]
    Y = da.zeros((10, 3), chunks=5)
    with pytest.raises(TypeError, match="out="):
        jac(Y, K_ROBER, out=np.empty((10, 3, 3)))
    with pytest.raises(ValueError, match="argument 'y' must have shape"):
        jac(da.zeros((10, 4), chunks=5), K_ROBER)
    with pytest.raises(TypeError, match="complex"):
        jac(Y.astype(complex), K_ROBER)
    with pytest.raises(ValueError, match="do not broadcast"):
        jac(Y, np.ones((4, 3)))
    with pytest.raises(ValueError, match="num_threads"):
        jac(Y, K_ROBER, num_threads=0)
    with pytest.raises(AttributeError, match="kernels="):
        symjac.jacobian(rober, y=3, k=3, backend="numpy").function(Y, K_ROBER)
    # integer inputs are converted like in a numpy call
    np.testing.assert_array_equal(jac(da.ones((4, 3), dtype=int, chunks=2), K_ROBER).compute(),
                                  jac(np.ones((4, 3)), K_ROBER))


def test_chunk_points_follows_the_target_time():
    jac = objects("cython")["jacobian"]
    y, k = sample_arguments("jacobian")
    points = symjac.dask.chunk_points(jac, y, k)
    assert 1 <= points <= 128 * 2**20 // (8 * (3 + 3 + 9))
    assert symjac.dask.chunk_points(jac, y, k, target_seconds=1e-4) < points
    assert symjac.dask.chunk_points(jac, y, k, max_bytes=8 * 15 * 100) == 100  # capped by memory


# --------------------------------------------------------------------------
# out of core: the example


def test_out_of_core_reduction_example_writes_exact_results_to_zarr(tmp_path):
    import tracemalloc

    import zarr

    from symjac.examples import dask_reduction as example
    from symjac.examples.hires import K_DEFAULT

    points, budget = 100_000, 8_000_000  # the Jacobians take 51 MB, six times the budget
    example.make_dataset(tmp_path / "states.zarr", points, chunk=5_000, seed=3)
    example.hires_jacobian()  # built (or loaded) before measuring memory
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="threads", num_workers=2):
            mean = example.reduce_jacobians(tmp_path / "states.zarr", tmp_path, memory_budget=budget, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert points * 512 > 4 * budget
    assert peak < budget, f"peak {peak / 1e6:.1f} MB traced, budget {budget / 1e6:.1f} MB"

    states = zarr.open_array(str(tmp_path / "states.zarr"), mode="r")[:]
    sigma = zarr.open_array(str(tmp_path / "sigma_max.zarr"), mode="r")
    assert sigma.shape == (points,) and sigma.chunks[0] < points  # written chunk by chunk
    J = example.hires_jacobian()(states, K_DEFAULT)
    np.testing.assert_array_equal(sigma[:], np.linalg.svd(J, compute_uv=False)[:, 0])
    np.testing.assert_allclose(mean, J.mean(axis=0), rtol=1e-10, atol=1e-10)  # summed in another order
    np.testing.assert_array_equal(np.load(tmp_path / "mean_jacobian.npy"), mean)


# --------------------------------------------------------------------------
# a cluster of worker processes


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, death_timeout=60) as cluster:
        with distributed.Client(cluster, timeout=60) as client:
            yield client


def test_local_cluster_computes_a_jacobian_reduction(client):
    jac = objects("cython")["jacobian"]
    Y = sample_arguments("jacobian", batch=(6000,), seed=5)[0]
    lazy = jac(da.from_array(Y, chunks=500), K_ROBER)
    norms = da.sqrt((lazy ** 2).sum(axis=(-2, -1)))
    got = client.compute(norms).result(timeout=TIMEOUT)
    J = jac(Y, K_ROBER)
    np.testing.assert_array_equal(got, np.sqrt((J ** 2).sum(axis=(-2, -1))))
    # nested results and the other kernels on the cluster too
    value, J2 = _compute(client, *jac.function_and_jacobian(da.from_array(Y, chunks=1000), K_ROBER))
    np.testing.assert_array_equal(J2, J)
    # the same kernel's value (function() alone is a differently simplified kernel: it may differ by an ulp)
    np.testing.assert_array_equal(value, jac.function_and_jacobian(Y, K_ROBER)[0])
    H = objects("cython")["hessian"]
    args = sample_arguments("hessian", batch=(300,))
    blocks = _compute(client, *flat(H(da.from_array(args[0], chunks=100), *args[1:])))
    for got_block, want in zip(blocks, flat(H(*args))):
        np.testing.assert_array_equal(got_block, want)


def _compute(client, *arrays):
    futures = client.compute(list(arrays))
    distributed.wait(futures, timeout=TIMEOUT)
    return client.gather(futures)


def _slow_norms(J):
    time.sleep(0.15)
    return np.sqrt((J ** 2).sum(axis=(-2, -1)))


def test_a_killed_worker_costs_a_retry_not_a_wrong_block(client):
    jac = objects("cython")["jacobian"]
    Y = sample_arguments("jacobian", batch=(8000,), seed=6)[0]
    lazy = jac(da.from_array(Y, chunks=200), K_ROBER)  # 40 tasks of ~0.15 s on two workers: ~3 s
    norms = lazy.map_blocks(_slow_norms, drop_axis=(1, 2), dtype=np.float64, meta=np.empty(0))
    before = client.run(os.getpid)
    future = client.compute(norms)
    deadline = time.monotonic() + 60
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)  # some blocks done and held by the worker we kill
    victim_address, victim_pid = sorted(before.items())[0]
    assert not future.done()  # killed in the middle of the computation
    os.kill(victim_pid, signal.SIGKILL)
    got = future.result(timeout=TIMEOUT)
    J = jac(Y, K_ROBER)
    np.testing.assert_array_equal(got, np.sqrt((J ** 2).sum(axis=(-2, -1))))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    after = client.run(os.getpid)
    assert victim_pid not in after.values() and len(after) == 2


def test_a_worker_without_a_compiler_reports_a_build_error(tmp_path):
    jac = objects("cython")["jacobian"]
    env = {"CC": "/nonexistent/cc", "SYMJAC_CACHE_DIR": str(tmp_path / "empty-cache")}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env=env) as cluster:
        with distributed.Client(cluster, timeout=60) as client:
            lazy = jac(da.ones((10, 3), chunks=5), K_ROBER)
            with pytest.raises(symjac.BuildError, match="C compiler") as caught:
                client.compute(lazy).result(timeout=TIMEOUT)
    message = str(caught.value)
    assert "/nonexistent/cc" in message and "backend='numpy'" in message


def test_blocks_reach_the_kernel_without_a_copy(monkeypatch):
    made, seen = [], set()  # the blocks a task made (kept alive: no address is reused); what the kernel got

    def made_here(block):
        made.append(block.copy())
        return made[-1]

    call = symjac.dask.Kernel.__call__

    def recorded(kernel, *blocks):
        seen.add(blocks[0].ctypes.data)
        return call(kernel, *blocks)

    monkeypatch.setattr(symjac.dask.Kernel, "__call__", recorded)
    states = sample_arguments("jacobian", batch=(40,), seed=7)[0]
    Y = da.from_array(states, chunks=(10, -1)).map_blocks(made_here)
    jac = objects("cython")["jacobian"]
    np.testing.assert_array_equal(jac(Y, K_ROBER).compute(scheduler="sync"), jac(states, K_ROBER))
    value, J = da.compute(*jac.function_and_jacobian(Y, K_ROBER), scheduler="sync")  # two outputs
    np.testing.assert_array_equal(J, jac(states, K_ROBER))
    assert len(seen) == 8 and seen <= {block.ctypes.data for block in made}  # the blocks themselves


def test_worker_environment_reaches_the_workers_before_they_start(monkeypatch):
    environment = symjac.dask.worker_environment(2**27)
    assert environment == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(2**27),
                           "MALLOC_TRIM_THRESHOLD_": str(2**27)}
    with pytest.raises(ValueError, match="at least 1 MiB"):
        symjac.dask.worker_environment(4096)
    for name, value in environment.items():  # as the docs say: os.environ.update(...) before the cluster
        monkeypatch.setenv(name, value)

    def at_start():  # the environment the worker process was started with, which glibc read
        with open("/proc/self/environ", "rb") as handle:
            pairs = (item.decode().partition("=") for item in handle.read().split(b"\0") if item)
        return {name: value for name, _, value in pairs if name in environment}

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        assert list(client.run(at_start).values()) == [environment]
        jac = objects("cython")["jacobian"]
        Y = sample_arguments("jacobian", batch=(600,), seed=8)[0]
        got = client.compute(jac(da.from_array(Y, chunks=200), K_ROBER)).result(timeout=TIMEOUT)
        np.testing.assert_array_equal(got, jac(Y, K_ROBER))
