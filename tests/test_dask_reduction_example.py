"""The out-of-core Dask example run as a user runs it: ``main(argv)``.

Small sizes; the example's numbers are checked in tests/test_dask.py. Here:
without ``--out`` it works in a temporary directory and removes it, with
``--out`` it keeps its results there, and it reports progress as it goes.
"""

import re
from pathlib import Path

import numpy as np
import zarr

from symjac.examples import dask_reduction as example
from symjac.examples.hires import K_DEFAULT

POINTS, BUDGET = 20_000, 4_000_000


def test_default_run_works_in_a_temporary_directory_removes_it_and_reports_progress(tmp_path, capsys):
    mean = example.main(["--points", str(POINTS), "--memory-budget", "4MB"])
    printed = capsys.readouterr().out
    where = re.search(r"working in (\S+) \(removed at the end", printed)
    assert where, printed
    assert not Path(where.group(1)).exists()
    assert "HIRES Jacobian kernel ready in" in printed
    tasks = re.findall(r"σ_max and mean of 20,000 Jacobians, chunks of [\d,]+: (\d+) of (\d+) tasks", printed)
    assert len(tasks) >= 2 and tasks[-1][0] == tasks[-1][1], printed   # progress, ending at n of n
    assert re.search(r"writing states: (\d+) of \1 tasks", printed), printed
    # the same states again (same seed and chunks), to check the mean it returned
    example.make_dataset(tmp_path / "states.zarr", POINTS, max(1000, BUDGET // (4 * 2 * 64)), seed=0)
    states = zarr.open_array(str(tmp_path / "states.zarr"), mode="r")[:]
    J = example.hires_jacobian()(states, K_DEFAULT)
    np.testing.assert_allclose(mean, J.mean(axis=0), rtol=1e-10, atol=1e-10)


def test_out_keeps_the_results(tmp_path, capsys):
    out = tmp_path / "results"
    mean = example.main(["--points", str(POINTS), "--memory-budget", "4MB", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "working in" not in printed
    assert zarr.open_array(str(out / "sigma_max.zarr"), mode="r").shape == (POINTS,)
    np.testing.assert_array_equal(np.load(out / "mean_jacobian.npy"), mean)
    assert (out / "states.zarr").exists()
