"""MoCo across 2 processes (gloo): the queue is identical on every rank after steps, and
holds every rank's keys; shuffle-BN keys are the keys of the right images."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ssl_hpc.models import build_encoder
from ssl_hpc.models.moco import MoCo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = build_encoder("resnet18", 5)
    model = MoCo(enc, enc.feature_dim, proj_dim=16, proj_hidden=32, queue_size=24)
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own images
    keys_seen = []
    for _ in range(2):
        x = torch.randn(4, 5, 20, 20, generator=g)
        loss, _ = ddp(x, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        keys_seen.append(x)
    queue, ptr = model.queue.clone(), model.queue_ptr.clone()  # as training left them
    # shuffle-BN keys vs keys computed without the shuffle, in eval mode (no batch
    # statistics) with rank 0's running statistics everywhere (each rank keeps its own)
    model.eval()
    for b in model.buffers():
        dist.broadcast(b, src=0)
    x = torch.randn(4, 5, 20, 20, generator=g)
    shuffled = model.keys(x)
    model.shuffle_bn = False
    plain = model.keys(x)
    torch.save(
        {"queue": queue, "ptr": ptr, "shuffled": shuffled, "plain": plain},
        os.path.join(out, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def test_queue_is_identical_on_every_rank(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["queue"], r1["queue"])
    # 2 steps x 2 ranks x 4 keys went into the first 16 of 24 slots: normalised keys
    assert int(r0["ptr"]) == int(r1["ptr"]) == 16
    assert torch.allclose(r0["queue"][:16].norm(dim=1), torch.ones(16), atol=1e-5)
    # rank 0's keys then rank 1's, per step: the two halves differ (different images)
    assert not torch.allclose(r0["queue"][:4], r0["queue"][4:8])
    # with BN in eval mode a key does not depend on its batch: the shuffle only moves rows,
    # and each rank gets back the keys of its own images
    for r in (r0, r1):
        assert torch.allclose(r["shuffled"], r["plain"], atol=1e-5)
