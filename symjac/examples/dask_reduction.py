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

    python -m symjac.examples.dask_reduction --points 2e6 --memory-budget 64MB --out /tmp/hires-reduction
    python -m symjac.examples.dask_reduction --points 1e8 --memory-budget 1GB --scheduler distributed

writes ``states.zarr`` (if missing), ``sigma_max.zarr`` (one float per point)
and ``mean_jacobian.npy`` (8, 8) under ``--out``. Needs ``symjac[dask]``.
"""

from __future__ import annotations

import argparse
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


def make_dataset(path, points, chunk, seed=0):
    """Write ``points`` random HIRES states (around Y0, positive) to a zarr
    array at ``path``, chunk by chunk (never all in memory)."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    states = Y0 + rng.uniform(0.0, 1.0, size=(points, 8), chunks=(chunk, 8))
    states.to_zarr(str(path), overwrite=True)


def reduce_jacobians(states_path, out, *, memory_budget, workers=2, chunk=None, backend=None):
    """σ_max per point to ``out/sigma_max.zarr``; return the mean Jacobian (8, 8).

    ``states_path`` is a zarr array (n, 8). Nothing of size n x 8 x 8 exists
    at any time: each task computes its chunk's Jacobians, and both the
    per-point reduction and the partial sums of the mean consume them there.
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
    _, mean = dask.compute(store, J.mean(axis=0))
    np.save(out / "mean_jacobian.npy", mean)
    return mean


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=2e6, help="data set size in points (default 2e6)")
    parser.add_argument("--memory-budget", default="64MB",
                        help="memory for the computation, e.g. 64MB, 1GB (default 64MB)")
    parser.add_argument("--out", default="hires-reduction", help="output directory")
    parser.add_argument("--scheduler", choices=("threads", "distributed"), default="threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("cython", "numpy"), default=None)
    options = parser.parse_args(argv)

    import dask
    from dask.utils import parse_bytes

    points, budget = int(options.points), parse_bytes(options.memory_budget)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    states_path = out / "states.zarr"
    if not states_path.exists():
        start = time.perf_counter()
        make_dataset(states_path, points, max(1000, budget // (4 * options.workers * 64)))
        print(f"wrote {points:,} states ({points * 64 / 1e6:,.1f} MB) in {time.perf_counter() - start:.1f} s")
    print(f"data set: {points:,} points; Jacobians would take {points * 512 / 1e6:,.1f} MB, "
          f"memory budget {budget / 1e6:,.1f} MB")
    start = time.perf_counter()
    if options.scheduler == "distributed":
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster):
            mean = reduce_jacobians(states_path, out, memory_budget=budget, workers=options.workers,
                                    backend=options.backend)
    else:
        with dask.config.set(scheduler="threads", num_workers=options.workers):
            mean = reduce_jacobians(states_path, out, memory_budget=budget, workers=options.workers,
                                    backend=options.backend)
    elapsed = time.perf_counter() - start
    print(f"σ_max of {points:,} Jacobians -> {out / 'sigma_max.zarr'} in {elapsed:.1f} s "
          f"({points / elapsed / 1e6:.2f} M points/s)")
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    print("mean Jacobian:")
    print(mean)


if __name__ == "__main__":
    main()
