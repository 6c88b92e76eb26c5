"""EpochBatches: the training batch order, a pure function of (seed, epoch), dealt out to ranks.

    pytest tests/test_sampler.py
"""

from __future__ import annotations

from maskdepth.data.sampler import EpochBatches


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch() -> None:
    a = EpochBatches(50, 8, seed=3, shuffle=True)
    b = EpochBatches(50, 8, seed=3, shuffle=True)
    a.set_epoch(2)
    b.set_epoch(2, start=2)
    full, resumed = list(a), list(b)
    assert len(full) == 6 and all(len(x) == 8 for x in full)  # ragged tail dropped in training
    assert resumed == full[2:]
    a.set_epoch(3)
    assert list(a) != full  # a new order each epoch
    ranks = [EpochBatches(50, 4, seed=3, shuffle=True, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    seen = [sum(list(r), []) for r in ranks]
    assert len(seen[0]) == len(seen[1]) and not set(seen[0]) & set(seen[1])
    val = [EpochBatches(11, 4, seed=0, shuffle=False, rank=r, world=3) for r in range(3)]
    assert sorted(sum((sum(list(v), []) for v in val), [])) == list(range(11))  # eval sees every sample once
