"""Run under mpiexec: each rank streams its shards; rank 0 writes what every rank read."""

import json
import sys

from mpi4py import MPI
from torch.utils.data import DataLoader

from ssl_hpc.data.reader import ShardedReader

comm = MPI.COMM_WORLD
survey, out = sys.argv[1], sys.argv[2]
reader = ShardedReader(
    survey, batch_size=16, rank=comm.rank, world_size=comm.size, shuffle=False, even=False
)
ids = [int(i) for b in DataLoader(reader, batch_size=None) for i in b["object_id"]]
gathered = comm.gather({"rank": comm.rank, "host": MPI.Get_processor_name(), "ids": ids})
if comm.rank == 0:
    with open(out, "w") as f:
        json.dump(gathered, f)
