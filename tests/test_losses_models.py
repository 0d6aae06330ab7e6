"""Losses against float64 numpy, the ResNets, MoCo's queue and momentum, the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_hpc.config import build
from ssl_hpc.errors import ConfigError
from ssl_hpc.losses import info_nce, nt_xent
from ssl_hpc.models import build_encoder
from ssl_hpc.models.moco import MoCo
from ssl_hpc.train.optim import LARS, lr_at


def numpy_info_nce(q, k, neg, t):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    losses = []
    for i in range(len(q)):
        pos = qn[i] @ kn[i] / t
        negs = neg @ qn[i] / t
        logits = np.concatenate([[pos], negs])
        losses.append(-(pos - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
    return np.mean(losses)


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
    neg = rng.normal(size=(32, 16))
    neg /= np.linalg.norm(neg, axis=1, keepdims=True)
    for t in (0.07, 0.2, 1.0):
        got = info_nce(*(torch.from_numpy(a) for a in (q, k, neg)), temperature=t)
        assert float(got) == pytest.approx(numpy_info_nce(q, k, neg, t), rel=1e-6)
    # a perfect positive and orthogonal negatives: the loss is log(1 + K e^{-1/t})
    e = np.eye(16)
    got = info_nce(torch.from_numpy(e[:1]), torch.from_numpy(e[:1]), torch.from_numpy(e[1:]), 0.5)
    assert float(got) == pytest.approx(np.log(1 + 15 * np.exp(-2.0)), rel=1e-9)


def test_nt_xent_matches_numpy():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    z = np.concatenate([z1, z2])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / 0.5
    losses = []
    for i in range(12):
        j = (i + 6) % 12
        others = [sim[i, m] for m in range(12) if m != i]
        losses.append(-sim[i, j] + np.log(np.sum(np.exp(others))))
    got = nt_xent(torch.from_numpy(z1), torch.from_numpy(z2), 0.5)
    assert float(got) == pytest.approx(np.mean(losses), rel=1e-6)


def test_resnets_have_the_published_shape():
    r50 = build_encoder("resnet50", 5)
    # torchvision's ResNet-50 trunk is 23,508,032 parameters for 3 bands; 2 more bands add
    # 2 x 64 x 7 x 7 stem weights
    assert sum(p.numel() for p in r50.parameters()) == 23_508_032 + 2 * 64 * 49
    assert r50.feature_dim == 2048 and r50(torch.randn(2, 5, 64, 64)).shape == (2, 2048)
    r18 = build_encoder("resnet18", 3, stem="standard")
    assert r18.feature_dim == 512 and r18(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    # the survey stem keeps 64 px into the first stage; the standard one quarters it
    assert build_encoder("resnet18", 5).stem(torch.randn(1, 5, 64, 64)).shape[-1] == 64
    assert r18.stem(torch.randn(1, 3, 64, 64)).shape[-1] == 16
    with pytest.raises(ConfigError, match="resnet99"):
        build_encoder("resnet99", 5)
    with pytest.raises(ConfigError, match="stem"):
        build_encoder("resnet18", 5, stem="tiny")


def tiny_moco(queue=32, momentum=0.9, shuffle_bn=True, bn_splits=1):
    torch.manual_seed(0)
    enc = build_encoder("resnet18", 5)
    return MoCo(enc, enc.feature_dim, proj_dim=16, proj_hidden=32, queue_size=queue,
                momentum=momentum, shuffle_bn=shuffle_bn, bn_splits=bn_splits)  # fmt: skip


def test_moco_enqueues_keys_and_moves_the_key_encoder_by_ema():
    m = tiny_moco(shuffle_bn=False)
    before_k = [p.detach().clone() for p in m.encoder_k.parameters()]
    queue = m.queue.clone()
    x = torch.randn(8, 5, 24, 24)
    loss, stats = m(x, x)
    # the same views through equal encoders: each key equals its query, so the positive
    # logit is 1/T, no random unit vector of the queue beats it, and the loss is InfoNCE
    # against the queue as it was before this step's keys went in
    with torch.no_grad():
        q = torch.nn.functional.normalize(m.head_q(m.encoder_q(x)), dim=1)
    assert float(stats["top1"]) == 1.0
    by_hand = numpy_info_nce(q.numpy(), q.numpy(), queue.numpy(), m.temperature)
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-4)
    # keys went into slots 0..7, normalised; the pointer moved on
    assert int(m.queue_ptr) == 8
    assert torch.allclose(m.queue[:8].norm(dim=1), torch.ones(8), atol=1e-5)
    # the key encoder started as a copy, so the first update left it equal to the query
    # encoder; after an SGD step it follows by k <- m k + (1 - m) q
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    loss.backward()
    opt.step()
    q_now = [p.detach().clone() for p in m.encoder_q.parameters()]
    m.momentum_update()
    for pk, k0, q1 in zip(m.encoder_k.parameters(), before_k, q_now):
        assert torch.allclose(pk, 0.9 * k0 + 0.1 * q1, atol=1e-6)
    with pytest.raises(ConfigError, match="not a multiple of the global batch 12"):
        m.enqueue(torch.randn(12, 16))


def test_moco_on_one_process_keys_batch_statistics_over_random_sub_batches():
    """Shuffle-BN on one process (bn_splits=2): the key encoder's BatchNorm sees random
    halves of the batch, not the batch the query encoder normalised over; with the
    default bn_splits=1 it sees the whole batch, as before."""
    x = torch.randn(64, 5, 24, 24, generator=torch.Generator().manual_seed(0))
    whole_batch = tiny_moco()
    with torch.no_grad():
        assert torch.equal(whole_batch.keys(x), whole_batch._key(x))
    m = tiny_moco(bn_splits=2)
    torch.manual_seed(5)
    keys = m.keys(x)
    torch.manual_seed(5)
    perm = torch.randperm(64)
    with torch.no_grad():
        for half in (perm[:32], perm[32:]):
            assert torch.allclose(keys[half], m._key(x[half]), atol=1e-5)
        whole = m._key(x)
    assert not torch.allclose(keys, whole, atol=1e-3)


def test_moco_leaves_a_queued_key_of_the_querys_own_galaxy_out():
    """On a survey smaller than the queue, an older key of the query's own galaxy comes
    round as a 'negative': with object ids it is left out of the loss (and counted in
    without them); checkpoints from before the queue kept ids load with owners unknown."""
    m = tiny_moco(queue=16, shuffle_bn=False)
    x, ids = torch.randn(8, 5, 24, 24), torch.arange(100, 108)
    m(x, x, ids)  # no optimiser step: the second step's keys equal the queued ones
    assert m.queue_ids[:8].tolist() == ids.tolist() and (m.queue_ids[8:] == -1).all()
    queue, owners = m.queue.clone().numpy(), m.queue_ids.clone()
    loss, _ = m(x, x, ids)
    with torch.no_grad():
        q = m.head_q(m.encoder_q(x)).numpy()
    by_hand = np.mean(
        [
            numpy_info_nce(
                q[i : i + 1], q[i : i + 1], queue[(owners != ids[i]).numpy()], m.temperature
            )
            for i in range(8)
        ]
    )
    assert float(loss) == pytest.approx(by_hand, rel=1e-4)
    m.queue.copy_(torch.from_numpy(queue))
    m.queue_ids.copy_(owners)
    unmasked, _ = m(x, x)  # its own key scores as high as the positive
    assert float(unmasked) > float(loss) + 0.1
    state = m.state_dict()
    del state["queue_ids"]
    old = tiny_moco(queue=16, shuffle_bn=False)
    old.load_state_dict(state)
    assert (old.queue_ids == -1).all() and torch.equal(old.queue, m.queue)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 1.0, 10, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_lars_scales_each_layer_by_its_trust_ratio():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))
    b = torch.nn.Parameter(torch.zeros(4))
    opt = LARS([w, b], lr=1.0, momentum=0.0, weight_decay=0.0, trust=0.01)
    w.grad, b.grad = torch.full((4, 4), 0.5), torch.ones(4)
    opt.step()
    # |w| = 8, |g| = 2: step = lr x 0.01 x 8 / 2 x g = 0.02 per element
    assert torch.allclose(w, torch.full((4, 4), 2.0 - 0.02))
    assert torch.allclose(b, -torch.ones(4))  # 1-D: plain SGD


def test_peak_lr_scales_with_the_global_batch_and_the_demo_trains_at_a_working_rate():
    from conftest import REPO

    from ssl_hpc.config import load_config
    from ssl_hpc.train.config import PretrainConfig

    one = build(PretrainConfig, {"base_lr": 0.6, "batch_size": 64, "queue_size": 4096})
    four = build(PretrainConfig, {**vars_of(one), "num_workers": 4})
    assert one.peak_lr == pytest.approx(0.6 * 64 / 256)
    assert four.peak_lr == pytest.approx(4 * one.peak_lr)  # linear in the global batch
    # The demo once peaked at 0.0075 (base 0.06, batch 32) and learned nothing in 300 steps;
    # the rate sweep (docs/representation.md) put the working range at 0.15-0.3.
    for name in ("pretrain-demo.yaml", "pretrain-gz1.yaml", "pretrain-gpu.yaml"):
        config = load_config(PretrainConfig, REPO / "jobs" / "configs" / name, [])
        assert 0.1 <= config.peak_lr <= 0.4, (name, config.peak_lr)


def vars_of(config) -> dict:
    return {k: v for k, v in vars(config).items() if k != "augment"}


def test_input_scaling_is_asinh_of_flux_over_the_band_scale_and_travels_with_the_weights():
    from ssl_hpc.models.resnet import InputScaling

    scaling = InputScaling(3, "asinh")
    scaling.set_scale([0.1, 0.2, 0.4])
    x = torch.tensor([1.0, -2.0, 40.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    expected = np.arcsinh(np.array([10.0, -10.0, 100.0]))
    assert np.allclose(scaling(x)[0, :, 0, 0].numpy(), expected, rtol=1e-6)
    linear = InputScaling(3, "linear")
    linear.set_scale([0.1, 0.2, 0.4])
    assert np.allclose(linear(x)[0, :, 0, 0].numpy(), [10.0, -10.0, 100.0], rtol=1e-6)
    enc = build_encoder("resnet18", 3, input_stretch="asinh")
    enc.input.set_scale([0.1, 0.2, 0.4])
    again = build_encoder("resnet18", 3, input_stretch="asinh")
    again.load_state_dict(enc.state_dict())
    assert torch.equal(again.input.scale, torch.tensor([0.1, 0.2, 0.4]))
    with pytest.raises(ConfigError, match="must be > 0"):
        enc.input.set_scale([0.1, 0.0, 0.4])
    with pytest.raises(ConfigError, match="expected 3 values"):
        enc.input.set_scale([0.1, 0.2])


def test_precision_auto_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from ssl_hpc.utils import hardware

    cpu = torch.device("cpu")
    assert hardware.resolve_precision("fp32", cpu) == "fp32"
    assert hardware.resolve_precision("bf16", cpu) == "bf16"  # asked for: honoured
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert hardware.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ())
    assert hardware.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="precision='fp16'"):
        hardware.resolve_precision("fp16", cpu)
    assert hardware.cpu_threads(0.9) == 1 and hardware.cpu_threads(10_000) >= 1
