"""Splits that hold out whole backgrounds, so that validation scores are of unseen scenes.

`split_mode="bg"` (the default): the sorted background ids are shuffled with `split_seed` and cut
by `fractions` (80/10/10), each split with a non-zero fraction getting at least one; the result
does not depend on the manifest's row order. `split_mode="random"` splits samples instead, as
older solutions did; it warns, because the same scenes then appear in training and validation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from maskdepth.data.manifest import Manifest
from maskdepth.errors import ConfigError, DataError

SPLITS = ("train", "val", "test", "all")
SPLIT_MODES = ("bg", "random")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError("data.fractions must be three non-negative numbers (train, val, test) summing to 1, "
                          f"got {list(fractions)}")
    return values  # type: ignore[return-value]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Sizes of train/val/test for n items: rounded, at least one for a non-zero fraction."""
    val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
    while fractions[0] > 0 and n - val - test < 1:  # give train its one back from the larger held-out split
        if val >= test:
            val -= 1
        else:
            test -= 1
    return [n - val - test, val, test]


def split_backgrounds(
    bg_ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, *, source: str = "the dataset"
) -> dict[str, list[str]]:
    """Assign whole backgrounds to train / val / test: {split: sorted bg ids}.

    Raises:
        DataError: fewer backgrounds than splits with a non-zero fraction.
    """
    fractions = check_fractions(fractions)
    ids = sorted(set(bg_ids))
    needed = sum(f > 0 for f in fractions)
    if len(ids) < needed:
        shown = ", ".join(ids[:5])
        raise DataError(
            f"{source} has {len(ids)} background(s) ({shown}); holding out whole backgrounds for "
            f"train/val/test needs at least {needed}. Make a dataset with more backgrounds "
            "(make-data --num-bg 3 or more), train on split 'all' without validation, or use "
            "split_mode='random' (splits samples; leaks backgrounds into validation)"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n_train, n_val, _ = _split_counts(len(ids), fractions)
    return {"train": sorted(shuffled[:n_train]), "val": sorted(shuffled[n_train : n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val :])}


def split_rows(manifest: Manifest, split: str, split_mode: str, fractions: tuple[float, float, float],
               split_seed: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(the manifest rows of `split`, {split: bg ids}) for `open_dataset`; a random split warns
    (pointing at open_dataset's caller)."""
    if split_mode == "bg":
        return _background_split(manifest, split, fractions, split_seed)
    return _random_split(manifest, split, fractions, split_seed)


def _background_split(manifest: Manifest, split: str, fractions: tuple[float, float, float],
                      split_seed: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(manifest rows of `split`, {split: bg ids}) holding out whole backgrounds; split "all"
    also works with too few backgrounds for three splits (then every one is in train)."""
    try:
        splits = split_backgrounds(manifest.bg_ids, fractions, split_seed, source=manifest.source)
    except DataError:
        if split != "all":
            raise
        splits = {"train": sorted(manifest.bg_ids), "val": [], "test": []}
    if split == "all":
        return np.arange(len(manifest)), splits
    chosen = set(splits[split])
    in_split = np.array([bg in chosen for bg in manifest.bg_ids], dtype=bool)
    return np.flatnonzero(in_split[manifest.bg_code]), splits


def _random_split(manifest: Manifest, split: str, fractions: tuple[float, float, float],
                  split_seed: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(manifest rows of `split`, {split: the bg ids its samples show}) splitting samples; warns."""
    warnings.warn("split_mode='random' splits samples, not backgrounds: validation and test scenes are also "
                  "in training, which inflates their scores; use split_mode='bg' for honest figures",
                  UserWarning, stacklevel=4)
    n = len(manifest)
    bg_names = np.asarray(manifest.bg_ids, dtype=object)
    order = np.random.default_rng(split_seed).permutation(n)
    n_train, n_val, _ = _split_counts(n, fractions)
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    splits = {name: sorted(set(bg_names[manifest.bg_code[p]])) for name, p in parts.items()}
    return (np.arange(n) if split == "all" else np.sort(parts[split])), splits
