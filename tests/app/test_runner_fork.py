"""The job's SIGTERM handler is for the job's own process: forked children (nnU-Net's fork Pools) keep
the default, so ``Pool.terminate()`` at the end of a ``with Pool()`` cannot leave a worker holding the
task queue's lock and the job hung (train2d's preprocessing did, about one run in two). Thirty pools of
eight workers hang without the fix in every try here; with it they take about 5 s."""
from __future__ import annotations

import json


def test_a_stage_that_opens_fork_pools_finishes(cli) -> None:
    result = cli("run", "--stage", "test-pool", "--set", "rounds=30", "--set", "processes=8", "--follow", "--json",
                 timeout=90, check=False)
    job = json.loads(result.stdout)
    assert (result.returncode, job["status"]) == (0, "succeeded"), result.stderr
    assert "[%d test-pool] 30 pools closed" % job["id"] in result.stderr
