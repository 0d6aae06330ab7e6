"""The reader inside Ray workers, as Ray Train will use it: pickled, opened lazily per worker."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_hpc.data.reader import ShardedReader
from ssl_hpc.data.survey import Survey


@pytest.mark.services
@pytest.mark.timeout(180)
def test_ranks_as_ray_actors_stream_disjoint_equal_batches(small_survey):
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HDF5_USE_FILE_LOCKING": "FALSE"}},
    )
    try:

        @ray.remote(num_cpus=1)
        def read_rank(reader: ShardedReader, epoch: int) -> list[list[int]]:
            reader.set_epoch(epoch)
            return [b["object_id"].tolist() for b in reader]

        world = 2
        readers = [
            ShardedReader(small_survey, batch_size=16, rank=r, world_size=world, seed=2)
            for r in range(world)
        ]
        for epoch in (0, 1):
            per_rank = ray.get([read_rank.remote(r, epoch) for r in readers])
            assert len(per_rank[0]) == len(per_rank[1]) > 0
            ids = np.concatenate([np.concatenate(b) for b in per_rank])
            assert len(np.unique(ids)) == len(ids)
            # the same stream as in this process: nothing depends on where a rank runs
            local = [b["object_id"].tolist() for b in _at_epoch(readers[1], epoch)]
            assert local == per_rank[1]
        assert set(ids) <= set(Survey(small_survey).column("object_id").tolist())
    finally:
        ray.shutdown()


def _at_epoch(reader: ShardedReader, epoch: int):
    reader.set_epoch(epoch)
    return list(reader)
