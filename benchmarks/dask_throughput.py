"""Throughput of symjac on Dask: HIRES Jacobians (8x8) at many points, reduced per point.

Each point is a random HIRES state; its Jacobian d f / d y (8x8) is reduced
to its Frobenius norm (``--reduction sigma_max``: the largest singular value,
an SVD per point, ~50x the cost), and the per-point results are summed, so
memory stays bounded whatever ``--points`` is. Runs, on the same points and
chunks (each figure the best of ``--repeats`` runs):

1. one process, one thread: a plain loop over the chunks (generate, kernel
   with ``num_threads=1``, reduce), in this process (glibc's default malloc
   settings) and in a child process started with
   ``symjac.dask.worker_environment()`` (memory kept for the next block);
2. with ``--threads``: Dask's threaded scheduler, one thread per core;
3. ``LocalCluster(processes=True)``, ``--workers`` worker processes of one
   thread, started with distributed's own environment and with
   ``symjac.dask.worker_environment()``; warm: one untimed run first, so each
   worker has loaded the kernel. Beside each, the same workers each running
   the plain loop over its share in one task: no graph, so the most those
   processes can do on this machine (the ceiling of the Dask run).

The issue's target: the 2-worker cluster at >= 1.6x the throughput of one
process with one thread. Per-task overhead = (wall time x workers - points x
single-thread cost per point) / tasks.

    python benchmarks/dask_throughput.py                          # 2e6 and 2e7 points in chunks of 2e5
    python benchmarks/dask_throughput.py --points 1e8 --chunks 1e6
    python benchmarks/dask_throughput.py --worker-saturation inf      # no queuing of root tasks

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


def chunk_states(seed, number, size):
    """The HIRES states of chunk ``number``: the same numbers in every run mode."""
    return Y0 + np.random.default_rng([seed, number]).uniform(0.0, 1.0, size=(size, 8))


def lazy_total(jac, points, chunk, reduction, seed=0):
    import dask.array as da

    def states_block(block_info=None):
        where = block_info[None]
        return chunk_states(seed, where["chunk-location"][0], where["chunk-shape"][0])

    # each chunk's states made in its task, as the plain loop makes them (a blockwise step: Dask fuses
    # it with the Jacobian and the reduction into one task per chunk)
    sizes = (chunk,) * (points // chunk) + ((points % chunk,) if points % chunk else ())
    states = da.map_blocks(states_block, chunks=(sizes, (8,)), dtype=np.float64, meta=np.empty((0, 8)))
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
        Y = chunk_states(seed, 0, n)
        block_sum(jac(Y, K_DEFAULT, num_threads=1), reduction)
        best = min(best, time.perf_counter() - start)
    return best / n


def plain_loop(jac, points, chunk, reduction, num_threads=1, seed=0, first=0):
    total = 0.0
    for number, begin in enumerate(range(0, points, chunk)):
        size = min(chunk, points - begin)
        Y = chunk_states(seed, first + number, size)
        total += block_sum(jac(Y, K_DEFAULT, num_threads=num_threads), reduction)[0]
    return total


def best_time(run, repeats):
    """Best wall time of ``repeats`` calls of ``run()``, and its last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def single_in_child(points, chunk, reduction, repeats, environ):
    """The one-thread plain loop's best time in a fresh process with ``environ`` added."""
    import json
    import subprocess

    code = ("import json, sys; sys.path.insert(0, %r); import dask_throughput as b, symjac; "
            "from symjac.examples.hires import SHAPES, hires; jac = symjac.jacobian(hires, **SHAPES, wrt='y'); "
            "b.plain_loop(jac, %d, %d, %r); print(json.dumps(b.best_time(lambda: b.plain_loop(jac, %d, %d, %r), %d)))"
            % (os.path.dirname(os.path.abspath(__file__)), chunk, chunk, reduction, points, chunk, reduction, repeats))
    output = subprocess.run([sys.executable, "-c", code], env={**os.environ, **environ}, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


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
    parser.add_argument("--points", default="2e6,2e7", help="points per run, comma-separated")
    parser.add_argument("--chunks", default="2e5", help="points per chunk, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the best is shown)")
    parser.add_argument("--reduction", choices=tuple(REDUCTIONS), default="frobenius")
    parser.add_argument("--threads", action="store_true", help="also run Dask's threaded scheduler")
    parser.add_argument("--worker-saturation", default=None,
                        help="distributed.scheduler.worker-saturation ('inf': send every root task at once)")
    options = parser.parse_args(argv)
    sizes = [(int(float(p)), int(float(c))) for p in options.points.split(",") for c in options.chunks.split(",")]
    cores = os.cpu_count() or 1

    import dask
    import distributed

    import symjac.dask

    jac = symjac.jacobian(hires, **SHAPES, wrt="y")
    t1 = per_point_cost(jac, options.reduction)
    print(f"# HIRES 8x8, reduction {options.reduction}, {cores} cores, load average {os.getloadavg()[0]:.1f}, "
          f"dask {dask.__version__}, distributed {distributed.__version__}")
    print(f"# single-thread cost per point (generate + Jacobian + reduce, 2e5 points): {t1 * 1e9:.0f} ns; "
          f"symjac.dask.chunk_points (kernel only, 100 ms): {symjac.dask.chunk_points(jac, Y0, K_DEFAULT):,}")
    print(f"# worker environment: {symjac.dask.worker_environment()}")
    rows = []

    def report(mode, points, chunk, elapsed, workers, peak=""):
        tasks = -(-points // chunk)
        overhead = (elapsed * workers - points * t1) / tasks
        rows.append((mode, points, chunk, elapsed))
        print(f"{mode:<34} {points:>11,} {chunk:>9,} {elapsed:>8.3f} s {points / elapsed / 1e6:>7.2f} M/s "
              f"{tasks:>5} tasks {overhead * 1e3:>7.2f} ms/task {peak}", flush=True)

    print(f"{'mode':<34} {'points':>11} {'chunk':>9} {'wall':>10} {'throughput':>11} {'':>11} "
          f"{'overhead':>15} peak RSS/worker")
    references = {}
    for points, chunk in sizes:
        elapsed, references[points, chunk] = best_time(
            lambda: plain_loop(jac, points, chunk, options.reduction), options.repeats)
        report("one process, 1 thread", points, chunk, elapsed, 1)
        elapsed, total = single_in_child(points, chunk, options.reduction, options.repeats,
                                         symjac.dask.worker_environment())
        report("  same, worker_environment()", points, chunk, elapsed, 1)
        if options.threads:
            elapsed, total = best_time(lambda: lazy_total(jac, points, chunk, options.reduction).compute(
                scheduler="threads", num_workers=cores), options.repeats)
            report(f"threaded scheduler, {cores} threads", points, chunk, elapsed, cores)
    print(f"# load average now {os.getloadavg()[0]:.1f}")

    if options.worker_saturation is not None:  # the scheduler runs in this process
        dask.config.set({"distributed.scheduler.worker-saturation": float(options.worker_saturation)})
        print(f"# distributed.scheduler.worker-saturation: {options.worker_saturation}")
    for label, environ in (("distributed's environment", {}), ("worker_environment()", symjac.dask.worker_environment())):
        os.environ.update(environ)  # the nanny starts workers with this process's environment (docs/adapters/dask.md)
        with distributed.LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.compute(lazy_total(jac, sizes[0][0], sizes[0][1], options.reduction, seed=99)).result()  # warm
            for points, chunk in sizes:
                client.run(peak_rss_mb, True)
                elapsed, total = best_time(lambda: client.compute(
                    lazy_total(jac, points, chunk, options.reduction)).result(timeout=3600), options.repeats)
                peaks = client.run(peak_rss_mb)
                report(f"LocalCluster {options.workers}x1, {label}", points, chunk, elapsed, options.workers,
                       ", ".join(f"{peaks[a]:.0f} MB" for a in sorted(peaks)))
                assert np.isclose(total, references[points, chunk], rtol=1e-9), (total, references[points, chunk])
                workers = sorted(client.scheduler_info()["workers"])
                share = -(-points // chunk // len(workers)) * chunk  # whole chunks per worker
                elapsed, totals = best_time(lambda: [future.result(timeout=3600) for future in [  # no graph
                    client.submit(plain_loop, jac, min(share, points - number * share), chunk, options.reduction,
                                  first=number * share // chunk, pure=False, workers=[address])
                    for number, address in enumerate(workers)]], options.repeats)
                report(f"  {label}: a plain loop per worker, no graph", points, chunk, elapsed, options.workers)
                assert np.isclose(sum(totals), references[points, chunk], rtol=1e-9)

    print("# cluster throughput / one process, one thread (target >= 1.6; 'no graph': the workers' ceiling):")
    for points, chunk in sizes:
        times = {mode.strip(): elapsed for mode, p, c, elapsed in rows if (p, c) == (points, chunk)}
        single = times["one process, 1 thread"]
        single_kept = times["same, worker_environment()"]
        for mode, elapsed in times.items():
            if mode.startswith("LocalCluster") or "no graph" in mode:
                print(f"#   {points:>11,} points, chunk {chunk:,}, {mode}: {single / elapsed:.2f}x "
                      f"({single_kept / elapsed:.2f}x one thread with worker_environment())")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
