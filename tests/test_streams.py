"""Counter-based per-example streams: the published Philox answers, exactness under any split of
the draws or the batch, and the distributions of the values against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaelik.inference import streams
from vaelik.inference.streams import Draws, example_keys, philox4x32, substream_keys


def words(values: list[int]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(v, dtype=torch.int64) for v in values)


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123's known-answer vectors for Philox4x32-10 (kat_vectors)
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ],
)
def test_philox_matches_the_published_known_answers(counter, key, expected):
    assert [int(w) for w in philox4x32(words(counter), words(key))] == expected


def test_philox_broadcasts_a_grid_to_the_same_words_as_one_call_per_cell():
    key = words([0x12345678, 0x9ABCDEF0])
    grid = philox4x32((torch.arange(3).view(-1, 1), torch.arange(4).view(1, -1), 5, 0), key)
    for i in range(3):
        for j in range(4):
            one = philox4x32(words([i, j, 5, 0]), key)
            assert [int(g[i, j]) for g in grid] == [int(w) for w in one]


def test_example_keys_are_distinct_and_depend_on_seed_and_index():
    index = torch.arange(10_000)
    keys = example_keys(0, index)
    assert keys.dtype == torch.int64 and keys.unique().numel() == 10_000
    assert not torch.equal(keys, example_keys(1, index))
    assert torch.equal(example_keys(0, index[[7, 3]]), keys[[7, 3]])  # a key is per example
    steps = substream_keys(keys, 3)
    assert torch.equal(steps[[7, 3]], substream_keys(keys[[7, 3]], 3))
    assert not torch.equal(steps, substream_keys(keys, 4)) and not torch.equal(steps, keys)


KEYS = example_keys(11, torch.arange(20, 26))


def all_kinds(draws: Draws) -> list[torch.Tensor]:
    """One call of every kind, in a fixed order (so purposes match across splits)."""
    return [draws.normal(7), draws.uniform(3), draws.gamma(2.5, 5), draws.gamma(0.4, 2)]


@pytest.mark.parametrize("block", [1 << 14, 64, 3])
def test_any_split_of_the_draws_or_the_batch_gives_the_same_values(block, monkeypatch):
    whole = all_kinds(Draws(KEYS, 0, 300))
    monkeypatch.setattr(streams, "CACHE_BLOCK", block)  # blocks inside a call change nothing
    for start, stop in [(0, 300), (0, 1), (17, 200), (299, 300)]:
        for full, part in zip(whole, all_kinds(Draws(KEYS, start, stop)), strict=True):
            assert torch.equal(full[start:stop], part)
    rows = [4, 0, 2]  # examples in another order, another batch
    for full, part in zip(whole, all_kinds(Draws(KEYS[rows], 0, 300)), strict=True):
        assert torch.equal(full[:, rows], part)


def test_calls_and_examples_draw_different_values():
    draws = Draws(KEYS, 0, 100)
    first, second = draws.normal(4), draws.normal(4)
    assert not torch.equal(first, second)
    flat = torch.cat([first, second], dim=-1).flatten(0, 1)  # [draws * examples, 8]
    correlation = torch.corrcoef(flat.T) - torch.eye(8)
    assert correlation.abs().max() < 0.1
    across_examples = torch.corrcoef(first[:, :, 0].T) - torch.eye(6)
    assert across_examples.abs().max() < 0.3


def test_dtypes():
    assert Draws(KEYS, 0, 5).normal(3).dtype == torch.get_default_dtype()
    values64 = Draws(KEYS, 0, 5, torch.float64).normal(3)
    values32 = Draws(KEYS, 0, 5, torch.float32).normal(3)
    assert values64.dtype == torch.float64
    torch.testing.assert_close(values64.float(), values32, rtol=1e-5, atol=1e-5)


def sample(kind: str, count: int = 20_000) -> np.ndarray:
    draws = Draws(example_keys(0, torch.arange(4)), 0, count // 4, torch.float64)
    if kind == "normal":
        return draws.normal(3).flatten().numpy()
    if kind == "uniform":
        return draws.uniform(3).flatten().numpy()
    return draws.gamma(float(kind.split()[1]), 3).flatten().numpy()


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        ("normal", st.norm()),
        ("uniform", st.uniform()),
        ("gamma 2.5", st.gamma(2.5)),
        ("gamma 0.3", st.gamma(0.3)),
        ("gamma 1", st.gamma(1.0)),
    ],
)
def test_values_follow_their_distribution(kind, reference):
    values = sample(kind)
    assert np.isfinite(values).all()
    assert st.kstest(values, reference.cdf).pvalue > 1e-3
    # the first two moments within 5 standard errors
    n = values.size
    assert abs(values.mean() - reference.mean()) < 5 * reference.std() / np.sqrt(n)
    assert abs(values.var() / reference.var() - 1) < 5 * np.sqrt(2 / n) * 3


def test_gamma_rejects_a_concentration_that_is_not_positive():
    with pytest.raises(ValueError, match="concentration must be > 0"):
        Draws(KEYS, 0, 2).gamma(0.0, 1)


def test_a_draw_range_must_be_non_empty():
    with pytest.raises(ValueError, match="0 <= start < stop"):
        Draws(KEYS, 5, 5)
