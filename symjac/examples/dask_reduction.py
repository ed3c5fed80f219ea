"""Out of core: reduce HIRES Jacobians over a data set larger than memory, with Dask.

A data set of HIRES states (``hires``: y (8,), k (12,)) lives in a zarr
store on disk. For every state we want the largest singular value of the
Jacobian d f / d y (how fast nearby trajectories can separate) and, over the
whole data set, the mean Jacobian. The Jacobians alone take 512 bytes per
point — 51 GB for 10^8 points — so they are never held at once: the states are
read chunk by chunk, each chunk's Jacobians are computed by symjac's compiled
kernel inside a Dask task, reduced to one number per point there, and the
per-point results are written to zarr with ``to_zarr`` as they are produced.
The mean is a tree reduction over the same chunks, in the same pass.

The chunk size follows from the memory budget: a task holds about
``BYTES_PER_POINT`` per point (state, Jacobian, the SVD's copy, result) and
``workers`` tasks run at once, with room for a finished chunk waiting for its
consumers; it is also capped by Dask's guidance of about 100 ms of work per
task (``symjac.dask.chunk_points``).

    python -m symjac.examples.dask_reduction                     # 10^6 points, 64 MB budget
    python -m symjac.examples.dask_reduction --points 1e7 --memory-budget 256MB --out hires-reduction
    python -m symjac.examples.dask_reduction --points 1e8 --memory-budget 1GB --scheduler distributed --out /big/disk

writes ``states.zarr`` (if missing), ``sigma_max.zarr`` (one float per point)
and ``mean_jacobian.npy`` (8, 8) under ``--out``. Without ``--out`` it works
in a temporary directory and removes it at the end (10^6 points take 64 MB
of disk; 10^8 take 6.4 GB). It prints each stage with its time and the
tasks done (k of n) while it computes: one updating line on a terminal,
a plain line every 10 % otherwise. Needs ``symjac[dask]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import symjac
import symjac.dask
from symjac.examples.hires import K_DEFAULT, SHAPES, Y0, hires

# state (8) + Jacobian (64) + the SVD's working copy (64) + singular values (8) + result (1), in doubles
BYTES_PER_POINT = 8 * (8 + 64 + 64 + 8 + 1)


def hires_jacobian(backend=None):
    return symjac.jacobian(hires, **SHAPES, wrt="y", backend=backend)


def largest_singular_value(J):
    """σ_max of each (8, 8) matrix in a block of shape (n, 8, 8) -> (n,)."""
    return np.linalg.svd(J, compute_uv=False)[..., 0]


def chunk_for_budget(jac, memory_budget, workers=2, target_seconds=0.1):
    """Points per chunk: ``workers`` tasks at once (plus as many finished
    chunks waiting) within ``memory_budget`` bytes, and no more than about
    ``target_seconds`` of kernel work per task."""
    by_memory = memory_budget // (2 * workers * BYTES_PER_POINT)
    by_time = symjac.dask.chunk_points(jac, Y0, K_DEFAULT, target_seconds=target_seconds)
    return int(max(1000, min(by_memory, by_time)))


def progress(label, stream=None):
    """A context in which Dask computations report the tasks done, k of n.

    On a terminal the line updates in place; elsewhere (logs, notebooks,
    pipes) a plain line is printed at every 10 %. Under a ``dask.distributed``
    client the scheduler runs the tasks, so this reports nothing: use the
    dashboard or ``distributed.progress`` there.
    """
    from dask.callbacks import Callback

    stream = stream or sys.stdout
    terminal = stream.isatty()

    class Progress(Callback):
        def _start_state(self, dsk, state):
            self.start, self.shown = time.perf_counter(), -1

        def _posttask(self, key, result, dsk, state, worker_id):
            done = len(state["finished"])
            total = done + sum(len(state[k]) for k in ("ready", "waiting", "running"))
            tenth = 10 * done // max(total, 1)
            if terminal:
                stream.write(f"\r  {label}: {done} of {total} tasks, {time.perf_counter() - self.start:.1f} s")
                stream.flush()
            elif tenth != self.shown:
                self.shown = tenth
                print(f"  {label}: {done} of {total} tasks, {time.perf_counter() - self.start:.1f} s",
                      file=stream, flush=True)

        def _finish(self, dsk, state, errored):
            if terminal:
                stream.write("\n")
                stream.flush()

    return Progress()


def make_dataset(path, points, chunk, seed=0, progress_stream=None):
    """Write ``points`` random HIRES states (around Y0, positive) to a zarr
    array at ``path``, chunk by chunk (never all in memory)."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    states = Y0 + rng.uniform(0.0, 1.0, size=(points, 8), chunks=(chunk, 8))
    with _reporting("writing states", progress_stream):
        states.to_zarr(str(path), overwrite=True)


def _reporting(label, stream):
    return progress(label, stream) if stream is not None else contextlib.nullcontext()


def reduce_jacobians(states_path, out, *, memory_budget, workers=2, chunk=None, backend=None,
                     progress_stream=None):
    """σ_max per point to ``out/sigma_max.zarr``; return the mean Jacobian (8, 8).

    ``states_path`` is a zarr array (n, 8). Nothing of size n x 8 x 8 exists
    at any time: each task computes its chunk's Jacobians, and both the
    per-point reduction and the partial sums of the mean consume them there.
    With ``progress_stream`` (a file such as ``sys.stdout``) the tasks done
    are reported there.
    """
    import dask
    import dask.array as da

    out = Path(out)
    jac = hires_jacobian(backend)
    states = da.from_zarr(str(states_path))
    chunk = chunk or chunk_for_budget(jac, memory_budget, workers)
    states = states.rechunk((chunk, 8))
    J = jac(states, K_DEFAULT)  # lazy (n, 8, 8), chunked like the states
    sigma = J.map_blocks(largest_singular_value, drop_axis=(1, 2), dtype=np.float64,
                         meta=np.empty((0,), dtype=np.float64))
    store = sigma.to_zarr(str(out / "sigma_max.zarr"), overwrite=True, compute=False)
    with _reporting(f"σ_max and mean of {states.shape[0]:,} Jacobians, chunks of {chunk:,}", progress_stream):
        _, mean = dask.compute(store, J.mean(axis=0))
    np.save(out / "mean_jacobian.npy", mean)
    return mean


def main(argv=None):
    """Run the example; return the mean Jacobian (8, 8)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e6, help="data set size in points (default 1e6)")
    parser.add_argument("--memory-budget", default="64MB",
                        help="memory for the computation, e.g. 64MB, 1GB (default 64MB)")
    parser.add_argument("--out", default=None,
                        help="output directory, kept (default: a temporary directory, removed at the end)")
    parser.add_argument("--scheduler", choices=("threads", "distributed"), default="threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("cython", "numpy"), default=None)
    options = parser.parse_args(argv)
    if options.out is None:
        with tempfile.TemporaryDirectory(prefix="hires-reduction-") as out:
            print(f"working in {out} (removed at the end; --out DIR keeps the results)", flush=True)
            return _run(options, Path(out))
    return _run(options, Path(options.out))


def _run(options, out):
    import dask
    from dask.utils import parse_bytes

    points, budget = int(options.points), parse_bytes(options.memory_budget)
    out.mkdir(parents=True, exist_ok=True)
    states_path = out / "states.zarr"
    start = time.perf_counter()
    hires_jacobian(options.backend)
    print(f"HIRES Jacobian kernel ready in {time.perf_counter() - start:.1f} s", flush=True)
    if not states_path.exists():
        start = time.perf_counter()
        make_dataset(states_path, points, max(1000, budget // (4 * options.workers * 64)),
                     progress_stream=sys.stdout)
        print(f"wrote {points:,} states ({points * 64 / 1e6:,.1f} MB) in {time.perf_counter() - start:.1f} s",
              flush=True)
    print(f"data set: {points:,} points; Jacobians would take {points * 512 / 1e6:,.1f} MB, "
          f"memory budget {budget / 1e6:,.1f} MB", flush=True)
    start = time.perf_counter()
    if options.scheduler == "distributed":
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster):
            print(f"computing on {options.workers} worker processes (no progress lines: see the dashboard)",
                  flush=True)
            mean = reduce_jacobians(states_path, out, memory_budget=budget, workers=options.workers,
                                    backend=options.backend)
    else:
        with dask.config.set(scheduler="threads", num_workers=options.workers):
            mean = reduce_jacobians(states_path, out, memory_budget=budget, workers=options.workers,
                                    backend=options.backend, progress_stream=sys.stdout)
    elapsed = time.perf_counter() - start
    print(f"σ_max of {points:,} Jacobians -> {out / 'sigma_max.zarr'} in {elapsed:.1f} s "
          f"({points / elapsed / 1e6:.2f} M points/s)")
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    print("mean Jacobian:")
    print(mean)
    return mean


if __name__ == "__main__":
    main()
