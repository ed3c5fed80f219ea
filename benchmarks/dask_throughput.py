"""Throughput of symjac on Dask: HIRES Jacobians (8x8) at many points, reduced per point.

Each point is a random HIRES state; its Jacobian d f / d y (8x8) is reduced
to its Frobenius norm (``--reduction sigma_max``: the largest singular value,
an SVD per point, ~50x the cost), and the per-point results are summed, so
memory stays bounded whatever ``--points`` is. Runs, on the same points:

1. single process, plain loop over chunks of 10^6 points, the kernel on all
   cores (OpenMP), generation and reduction in numpy;
2. single process, Dask's threaded scheduler with one thread per core (one
   kernel thread per task), at each chunk size;
3. ``LocalCluster(processes=True)``, ``--workers`` worker processes with one
   thread each, at each chunk size; workers are restarted before each run so
   their peak RSS (``ru_maxrss``) belongs to that run.

Per-task overhead = (wall time x cores - points x single-thread cost per
point) / tasks, where the single-thread cost per point (generation, kernel
and reduction on one core) is measured first.

    python benchmarks/dask_throughput.py                      # 4e6 points, ~3 minutes on a busy 2-core machine
    python benchmarks/dask_throughput.py --points 1e8         # the issue's figure
    python benchmarks/dask_throughput.py --chunks 1e4,1e5,1e6 --workers 2

Needs ``symjac[dask]``. All networking is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

import symjac
from symjac.examples.hires import K_DEFAULT, SHAPES, Y0, hires


def frobenius(J):
    return np.sqrt(np.einsum("...ij,...ij->...", J, J))


def sigma_max(J):
    return np.linalg.svd(J, compute_uv=False)[..., 0]


REDUCTIONS = {"frobenius": frobenius, "sigma_max": sigma_max}


def block_sum(J, reduction):
    """Reduce each point of a block, then sum the block: one number per task."""
    return np.atleast_1d(REDUCTIONS[reduction](J).sum())


def lazy_total(jac, points, chunk, reduction, seed=0):
    import dask.array as da

    states = Y0 + da.random.default_rng(seed).uniform(0.0, 1.0, size=(points, 8), chunks=(chunk, 8))
    J = jac(states, K_DEFAULT)  # lazy (points, 8, 8), one kernel thread per task
    if reduction == "frobenius":  # Dask's einsum works on the blocks as they are
        return da.sqrt(da.einsum("...ij,...ij->...", J, J)).sum()
    # map_blocks(drop_axis=...) concatenates, so copies each block once: the SVD dwarfs that
    sums = J.map_blocks(block_sum, reduction, drop_axis=(1, 2), chunks=((1,) * len(J.chunks[0]),),
                        dtype=np.float64, meta=np.empty(0))
    return sums.sum()


def per_point_cost(jac, reduction, n=200_000, repeats=3):
    """Seconds per point on one core: generate, Jacobian, reduce."""
    best = float("inf")
    for seed in range(repeats):
        start = time.perf_counter()
        Y = Y0 + np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, 8))
        block_sum(jac(Y, K_DEFAULT, num_threads=1), reduction)
        best = min(best, time.perf_counter() - start)
    return best / n


def plain_loop(jac, points, chunk, reduction):
    total = 0.0
    for number, begin in enumerate(range(0, points, chunk)):
        size = min(chunk, points - begin)
        Y = Y0 + np.random.default_rng(number).uniform(0.0, 1.0, size=(size, 8))
        total += block_sum(jac(Y, K_DEFAULT), reduction)[0]  # kernel on all cores
    return total


def peak_rss_mb(reset=False):
    """This process's peak resident memory (VmHWM, Linux), optionally reset first."""
    if reset:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=4e6, help="points per run (default 4e6: ~3 minutes on a busy 2-core machine; the issue: 1e8)")
    parser.add_argument("--chunks", default="1e4,1e5,1e6", help="points per chunk, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--reduction", choices=tuple(REDUCTIONS), default="frobenius")
    parser.add_argument("--skip-threads", action="store_true", help="skip the threaded-scheduler runs")
    parser.add_argument("--keep-worker-memory", action="store_true",
                        help="start workers with MALLOC_TRIM_THRESHOLD_=1GiB and MALLOC_MMAP_THRESHOLD_=32MiB "
                             "(distributed's default MALLOC_TRIM_THRESHOLD_=65536 fixes glibc's mmap threshold "
                             "at 128 KiB, so every chunk's Jacobian is a fresh mmap, page-faulted in afresh: "
                             "3-10x slower kernels here)")
    options = parser.parse_args(argv)
    points = int(options.points)
    chunks = [int(float(c)) for c in options.chunks.split(",")]
    cores = os.cpu_count() or 1

    import dask
    import distributed

    import symjac.dask

    jac = symjac.jacobian(hires, **SHAPES, wrt="y")
    t1 = per_point_cost(jac, options.reduction)
    print(f"# HIRES 8x8, reduction {options.reduction}, {points:.3g} points per run, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}, "
          f"dask {dask.__version__}, distributed {distributed.__version__}")
    print(f"# single-thread cost per point (generate + Jacobian + reduce): {t1 * 1e9:.0f} ns; "
          f"symjac.dask.chunk_points (kernel only, 100 ms): {symjac.dask.chunk_points(jac, Y0, K_DEFAULT):,}")
    rows = []

    def report(mode, chunk, elapsed, tasks, workers, peak=""):
        overhead = (elapsed * workers - points * t1) / tasks if tasks else float("nan")
        rows.append((mode, chunk, elapsed, points / elapsed / 1e6, tasks, overhead * 1e3, peak))
        print(f"{mode:<26} {chunk:>9,} {elapsed:>8.2f} s {points / elapsed / 1e6:>8.2f} M/s {tasks:>7,} tasks "
              f"{overhead * 1e3:>8.2f} ms/task {peak}", flush=True)

    print(f"{'mode':<26} {'chunk':>9} {'wall':>10} {'throughput':>10} {'tasks':>13} {'overhead':>16} peak RSS/worker")
    start = time.perf_counter()
    reference = plain_loop(jac, points, 10**6, options.reduction)
    report("single process, OpenMP", 10**6, time.perf_counter() - start, 0, cores,
           f"{peak_rss_mb():.0f} MB (whole process)")
    print(f"# load average now {os.getloadavg()[0]:.1f}")

    if not options.skip_threads:
        for chunk in chunks:
            lazy = lazy_total(jac, points, chunk, options.reduction)
            start = time.perf_counter()
            total = lazy.compute(scheduler="threads", num_workers=cores)
            report("single process, threads", chunk, time.perf_counter() - start, -(-points // chunk), cores)
            assert np.isclose(total, reference, rtol=1e-3), (total, reference)  # different random streams

    if options.keep_worker_memory:
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ.update(MALLOC_TRIM_THRESHOLD_=str(2**30), MALLOC_MMAP_THRESHOLD_=str(2**25))
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    with distributed.LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for chunk in chunks:
            client.restart()
            client.wait_for_workers(options.workers, timeout=120)
            idle = client.run(peak_rss_mb, True)
            lazy = lazy_total(jac, points, chunk, options.reduction)
            start = time.perf_counter()
            future = client.compute(lazy)
            total = future.result(timeout=3600)
            elapsed = time.perf_counter() - start
            peaks = client.run(peak_rss_mb)
            shown = ", ".join(f"{peaks[a]:.0f} MB (idle {idle.get(a, float('nan')):.0f})" for a in sorted(peaks))
            report(f"LocalCluster {options.workers}x1 procs", chunk, elapsed, -(-points // chunk),
                   options.workers, shown)
            assert np.isclose(total, reference, rtol=1e-3), (total, reference)

    best_single = min(r[2] for r in rows if r[0].startswith("single"))
    best_cluster = min(r[2] for r in rows if r[0].startswith("LocalCluster"))
    print(f"# best LocalCluster / best single process: {best_cluster / best_single:.2f}x (target <= 1.3x)")
    print(f"# bytes per point: 64 in (generated in the task), 512 of Jacobian inside the task, "
          f"8 out per chunk; between processes: ~0 per point")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
