"""The sharded reader: whole shards per rank, determinism, equal batches, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_hpc.data import batch_buffers
from ssl_hpc.data import reader as reader_module
from ssl_hpc.data.reader import ReaderPosition, ShardedReader, assign_shards
from ssl_hpc.data.survey import Survey
from ssl_hpc.errors import SurveyError


def ids_of(reader: ShardedReader, workers: int = 0) -> list[np.ndarray]:
    return [b["object_id"].numpy() for b in reader.loader(workers)]


def test_assignment_is_whole_shards_balanced_and_a_partition():
    sizes = np.array([48, 48, 48, 48, 48, 48, 48, 20])
    for world in (1, 2, 3, 4):
        for epoch in (0, 1):
            parts = assign_shards(sizes, world, epoch, seed=3)
            flat = sorted(s for p in parts for s in p)
            assert flat == list(range(len(sizes)))
            loads = [sizes[p].sum() for p in parts]
            assert max(loads) - min(loads) <= sizes.max()
    assert assign_shards(sizes, 2, 0, 3) != assign_shards(sizes, 2, 1, 3)  # reshuffled per epoch
    with pytest.raises(SurveyError, match="8 non-empty shards cannot feed 9 ranks"):
        assign_shards(sizes, 9, 0, 0)
    # an empty shard (every object rejected at ingest) is given to nobody
    parts = assign_shards(np.array([10, 0, 10, 10]), 3, 0, seed=1)
    assert sorted(s for p in parts for s in p) == [0, 2, 3] and all(parts)


@pytest.mark.parametrize("world", [2, 3])
def test_inference_mode_reads_every_object_exactly_once(small_survey, world):
    survey = Survey(small_survey)
    seen = []
    for rank in range(world):
        r = ShardedReader(
            survey, batch_size=10, rank=rank, world_size=world, shuffle=False, even=False
        )
        seen += [i for b in ids_of(r) for i in b]
    assert sorted(seen) == sorted(survey.column("object_id").tolist())


def test_training_mode_equal_batches_no_duplicates_across_ranks_and_workers(small_survey):
    survey = Survey(small_survey)
    world, batch = 3, 16
    per_rank = []
    for rank in range(world):
        r = ShardedReader(
            survey, batch_size=batch, rank=rank, world_size=world, seed=5, columns=("ebv", "z_spec")
        )
        batches = ids_of(r, workers=2)
        assert all(len(b) == batch for b in batches)
        per_rank.append(np.concatenate(batches))
        # a rank reads only its own shards
        shards = set(assign_shards(survey.shard_sizes, world, 0, 5)[rank])
        rows = survey.locate(per_rank[-1])
        assert set(np.searchsorted(survey.shard_offsets, rows, side="right") - 1) <= shards
    assert len({len(p) for p in per_rank}) == 1  # same number of batches on every rank
    everything = np.concatenate(per_rank)
    assert len(np.unique(everything)) == len(everything)
    # what an epoch skips is bounded by the shard imbalance plus a partial batch per rank
    dropped = len(survey) - len(everything)
    assert dropped <= (world - 1) * survey.shard_sizes.max() + world * (batch - 1)


def test_batch_contents_match_the_survey(small_survey):
    survey = Survey(small_survey)
    r = ShardedReader(survey, batch_size=8, seed=1, columns=("ebv", "z_spec"))
    b = next(iter(r))
    rows = survey.locate(b["object_id"].numpy())
    assert b["image"].dtype == torch.float32 and b["image"].shape == (8, 5, 48, 48)
    np.testing.assert_array_equal(b["image"].numpy(), survey.images(rows))
    np.testing.assert_array_equal(b["ebv"].numpy(), survey.column("ebv")[rows])
    np.testing.assert_array_equal(b["psf_fwhm"].numpy(), survey.per_band("image_psf_fwhm")[rows])
    # as stored (float16 here): half the bytes to move, the same values
    native = next(iter(ShardedReader(survey, batch_size=8, seed=1, image_dtype=None)))
    assert native["image"].dtype == torch.float16
    assert torch.equal(native["image"].float(), b["image"])


def test_order_is_seeded_and_independent_of_worker_count(small_survey):
    a = ShardedReader(small_survey, batch_size=12, seed=9)
    b = ShardedReader(small_survey, batch_size=12, seed=9)
    c = ShardedReader(small_survey, batch_size=12, seed=10)
    base = np.concatenate(ids_of(a, workers=0))
    np.testing.assert_array_equal(base, np.concatenate(ids_of(b, workers=2)))
    # one worker shares the reading with this process (every other batch): the same stream
    np.testing.assert_array_equal(base, np.concatenate(ids_of(b, workers=1)))
    assert not np.array_equal(base, np.concatenate(ids_of(c)))
    a.set_epoch(1)
    assert not np.array_equal(base, np.concatenate(ids_of(a)))


def _slots_seen(monkeypatch) -> list[tuple[int, int]]:
    """Record the (worker, ring slot) of every batch the loader hands out."""
    seen = []

    def recording(batch, flags):
        parcel = batch[batch_buffers.SLOT_KEY]
        seen.append((parcel.worker, parcel.slot))
        return batch_buffers.track(batch, flags)

    monkeypatch.setattr(reader_module, "track", recording)
    return seen


def test_worker_buffers_are_reused_once_released_and_never_while_held(small_survey, monkeypatch):
    def reader():
        return ShardedReader(small_survey, batch_size=4, seed=3)

    expected = [{k: v.clone() for k, v in b.items()} for b in reader().loader(0)]
    assert len(expected) > 4 * batch_buffers.RING  # enough batches to go round each ring

    seen = _slots_seen(monkeypatch)
    for b, want in zip(reader().loader(2), expected, strict=True):
        assert list(b) == list(want)  # the same keys, in the same order, as without workers
        assert all(torch.equal(b[k], want[k]) and b[k].dtype == want[k].dtype for k in b)
        del b  # released: its slot is free for the worker's next batch but one
    assert all(slot >= 0 for _, slot in seen)  # the ring never ran out
    assert len(set(seen)) <= 2 * batch_buffers.RING < len(seen)  # so slots came round again

    seen.clear()
    held = list(reader().loader(2))  # a consumer keeping every batch
    assert sum(slot >= 0 for _, slot in seen) == 2 * batch_buffers.RING  # rings filled once,
    assert sum(slot < 0 for _, slot in seen) == len(expected) - 2 * batch_buffers.RING  # then fresh
    for b, want in zip(held, expected, strict=True):  # and nothing held was overwritten
        assert torch.equal(b["object_id"], want["object_id"])
        assert torch.equal(b["image"], want["image"])
    assert all(batch_buffers.SLOT_KEY not in b for b in held)


def test_resume_mid_epoch_yields_the_same_remaining_sequence(small_survey):
    full = ShardedReader(small_survey, batch_size=8, rank=1, world_size=2, seed=4)
    full.set_epoch(2)
    whole = ids_of(full, workers=2)
    state = ReaderPosition(epoch=2, batch=5).state_dict()
    resumed = ShardedReader(small_survey, batch_size=8, rank=1, world_size=2, seed=4)
    resumed.load_state_dict(state)
    rest = ids_of(resumed, workers=2)
    assert len(rest) == len(whole) - 5
    for x, y in zip(rest, whole[5:]):
        np.testing.assert_array_equal(x, y)
    resumed.load_state_dict(state)  # with one worker (and this process reading too)
    for x, y in zip(ids_of(resumed, workers=1), whole[5:], strict=True):
        np.testing.assert_array_equal(x, y)


def test_reader_errors_name_the_problem(small_survey):
    with pytest.raises(SurveyError, match="no column"):
        ShardedReader(small_survey, batch_size=4, columns=("nope",))
    with pytest.raises(SurveyError, match="rank=2 outside world_size=2"):
        ShardedReader(small_survey, batch_size=4, rank=2, world_size=2)
    with pytest.raises(SurveyError, match="batch_size=0"):
        ShardedReader(small_survey, batch_size=0)
