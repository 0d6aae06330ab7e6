"""Run under mpiexec: embed as `ssl-hpc embed` does, but every rank dies hard (as a rank
killed by the scheduler would) right after recording its first N shards.

usage: embed_killed_after.py N CHECKPOINT SURVEY OUT
"""

import os
import sys

from ssl_hpc.embed import EmbedOptions, embed_survey

n, checkpoint, survey, out = int(sys.argv[1]), *sys.argv[2:5]
written = []


def die_after_n(index: int) -> None:
    written.append(index)
    if len(written) >= n:
        os._exit(17)


embed_survey(checkpoint, survey, out, EmbedOptions(batch_size=32), after_shard=die_after_n)
