"""The mixing sampler: real samples in every batch, the ratio, exact resume, disjoint ranks."""

import itertools

import pytest

from dreammask.trainer.data.mixing import MixedBatchSampler, split_batch


def test_every_batch_has_real_samples_and_the_ratio_holds():
    s = MixedBatchSampler(num_real=10, num_synthetic=7, batch_size=4, ratio=0.5, seed=3)
    for batch in itertools.islice(iter(s), 50):
        idx = [i for i, _ in batch]
        assert len(idx) == 4
        assert sum(i < 10 for i in idx) == 2 and sum(i >= 10 for i in idx) == 2
    # a high ratio is capped so one real sample stays
    assert split_batch(4, 0.95, 10, 7, min_real=1) == (1, 3)
    assert split_batch(4, 0.0, 10, 7, min_real=1) == (4, 0)
    assert split_batch(4, 0.5, 10, 0, min_real=1) == (4, 0)


def test_each_epoch_covers_every_sample_once():
    s = MixedBatchSampler(num_real=6, num_synthetic=3, batch_size=3, ratio=1 / 3, seed=0)
    real = [i for b in (s.batch(it) for it in range(3)) for i, _ in b if i < 6]
    syn = [i for b in (s.batch(it) for it in range(3)) for i, _ in b if i >= 6]
    assert sorted(real) == list(range(6)) and sorted(syn) == [6, 7, 8]


def test_resume_yields_the_same_batches_and_seeds():
    full = MixedBatchSampler(8, 5, 4, 0.5, seed=11)
    resumed = MixedBatchSampler(8, 5, 4, 0.5, seed=11, start_iter=13)
    assert list(itertools.islice(iter(full), 13, 20)) == list(itertools.islice(iter(resumed), 7))


def test_ranks_read_disjoint_samples():
    r0 = MixedBatchSampler(8, 8, 2, 0.5, seed=1, rank=0, world_size=2)
    r1 = MixedBatchSampler(8, 8, 2, 0.5, seed=1, rank=1, world_size=2)
    seen0 = {i for it in range(4) for i, _ in r0.batch(it)}
    seen1 = {i for it in range(4) for i, _ in r1.batch(it)}
    assert not seen0 & seen1 and len(seen0 | seen1) == 16


def test_impossible_mixes_say_what_to_change():
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        split_batch(1, 0.5, 10, 10, min_real=1)
    with pytest.raises(ValueError, match="MIN_REAL_PER_BATCH 0"):
        split_batch(4, 0.5, 0, 10, min_real=1)
    assert split_batch(4, 0.5, 0, 10, min_real=0) == (0, 4)
    with pytest.raises(ValueError, match="RATIO"):
        split_batch(4, 1.5, 3, 3, min_real=1)
