"""Per-example random streams: the draws an example gets depend on its dataset index, not on the
batch, the chunk, the process or the device it lands on.

Every value is a pure function of (example key, draw number k, purpose, position), computed for
a whole chunk at once by a counter-based generator (:func:`philox4x32`): no generator state, no
Python loop over examples (draws go in cache-sized blocks), the same bits on CPU and GPU (the
floats made from them differ by rounding only). So any chunking of the K draws (or of the
batch) reproduces the same numbers, the first K draws of a run with more draws are the same,
and an example gets the same estimate on one process or on many.

Keys: ``example_keys(seed, index) [B]`` mixes the run's seed with each dataset index
(splitmix64); :func:`substream_keys` mixes further integers in (an AIS step and direction).
A :class:`Draws` object hands out *base noise* for draws ``start..stop-1``: standard normals,
uniforms and gammas, each call with its own purpose number, so the noise's layout is set by the
order of the calls. Guides and proposals turn noise into latents, so this holds for every guide.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: Philox4x32-10 constants (Salmon, Moraes, Dror & Shaw, SC 2011): round multipliers, Weyl
#: increments of the key, number of rounds
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
#: (draw, example, word) cells computed per pass on a CPU: small enough to stay in cache
CACHE_BLOCK = 1 << 14
#: cells per pass on other devices: a GPU wants few, large kernels
DEVICE_BLOCK = 1 << 24

_LOW32 = 0xFFFFFFFF

Words = tuple[torch.Tensor, ...]
#: ``(attempt, cells=None) -> (w0, w1, w2, w3)``: a block's Philox words at that attempt number,
#: ``[rows, B, width]``, or only at ``cells = (row, example, position)`` index tensors ``[m]``
WordsByAttempt = Callable[..., Words]
#: a block's values ``[rows, B, >= dims]`` from its words
BlockValues = Callable[[WordsByAttempt], torch.Tensor]


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(value: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 words (torch's ``>>`` keeps the sign bit)."""
    return (value >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(value: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function of int64 words (wrapping arithmetic = arithmetic mod 2^64)."""
    value = value + _GOLDEN
    value = (value ^ _shift_right(value, 30)) * _MIX1
    value = (value ^ _shift_right(value, 27)) * _MIX2
    return value ^ _shift_right(value, 31)


def substream_keys(keys: torch.Tensor, *parts: int) -> torch.Tensor:
    """Keys ``[B]`` (int64) with integers ``parts`` mixed in: one new stream per example."""
    for part in parts:
        keys = _splitmix64(keys ^ _signed(int(part) & ((1 << 64) - 1)))
    return keys


def example_keys(seed: int, index: torch.Tensor) -> torch.Tensor:
    """Stream keys ``[B]`` (int64) of the examples ``index [B]`` in a run seeded ``seed``."""
    index = torch.as_tensor(index, dtype=torch.int64)
    return _splitmix64(substream_keys(torch.zeros_like(index), seed) ^ index)


def _unless_int(product: torch.Tensor | int) -> torch.Tensor | int:
    """A product tensor as it is; a product of ints cut to its low 32 bits (an int above
    2^63 cannot meet an int64 tensor)."""
    return product if isinstance(product, torch.Tensor) else product & _LOW32


def philox4x32(
    counter: tuple[torch.Tensor | int, ...], key: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of the 32-bit words ``counter = (c0, c1, c2, c3)`` under ``key = (k0, k1)``
    (int64 tensors or ints holding 32-bit words, broadcast together): four int64 tensors of
    32-bit words. Ten rounds of (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2),
    hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)), the key bumped by (W0, W1) mod 2^32 between rounds.
    Distinct counters under one key give distinct outputs; the output passes BigCrush.

    A product of two 32-bit words fits 64 bits, so int64 multiplication wraps to its exact bits:
    bits 32..63 are hi, bits 0..31 lo. The lo words are kept unmasked (they are only XORed into
    a word that is masked before it is multiplied, or masked at the end): five passes a
    half-round instead of six."""
    c0, c1, c2, c3 = counter  # ints stay ints: no host-to-device copy for a constant word
    k0, k1 = key
    for round_ in range(PHILOX_ROUNDS):
        if round_:
            k0, k1 = (k0 + PHILOX_W0) & _LOW32, (k1 + PHILOX_W1) & _LOW32
        product0, product2 = c0 * PHILOX_M0, c2 * PHILOX_M1
        c0 = ((product2 >> 32) ^ c1 ^ k0) & _LOW32
        c2 = ((product0 >> 32) ^ c3 ^ k1) & _LOW32
        c1, c3 = _unless_int(product2), _unless_int(product0)
    # every word is a tensor after the first round, since the key words are
    return c0, c1 & _LOW32, c2, c3 & _LOW32  # type: ignore[return-value]


def open_uniform(words: torch.Tensor) -> torch.Tensor:
    """32-bit words to float64 uniforms (w + 1/2) / 2^32, strictly inside (0, 1).

    Every value is computed in float64 and rounded once to the requested dtype: a float32 log or
    cosine can differ by an ulp between a kernel's vectorised body and its scalar tail, which
    would make a value depend on where it sits in the batch; rounded from float64 it does not."""
    return (words.double() + 0.5) * 2.0**-32


def polar(radius_words: torch.Tensor, angle_words: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Box-Muller's polar pair from words: r = sqrt(-2 log u_a), angle = 2 pi u_b (float64);
    (r cos angle, r sin angle) are two independent standard normals."""
    radius = torch.sqrt(-2.0 * torch.log(open_uniform(radius_words)))
    return radius, (2.0 * math.pi) * open_uniform(angle_words)


class Draws:
    """Draws ``start..stop-1`` of every example's stream, for the examples keyed ``keys [B]``.

    Each method returns ``[stop - start, B, dims]`` in ``dtype`` (default: torch's) and takes
    the next purpose number, so two calls never share values. Value ``(k, b, j)`` of a call
    depends only on ``keys[b]``, k, the purpose and j.
    """

    def __init__(
        self, keys: torch.Tensor, start: int, stop: int, dtype: torch.dtype | None = None
    ) -> None:
        if not 0 <= start < stop:
            raise ValueError(f"need 0 <= start < stop, got {start}, {stop}")
        self.keys = torch.as_tensor(keys, dtype=torch.int64)
        self.start, self.stop = start, stop
        self.dtype = dtype or torch.get_default_dtype()
        self.purpose = 0
        self.device = self.keys.device

    @property
    def count(self) -> int:
        """Draws per example: stop - start."""
        return self.stop - self.start

    def _fill(self, dims: int, width: int, values: BlockValues) -> torch.Tensor:
        """``[n, B, dims]``, block by block of consecutive draws sized to stay in cache (several
        times faster than one pass over the whole grid): ``values(words) -> [rows, B, >= dims]``
        where ``words(attempt)`` gives the four Philox word tensors ``[rows, B, width]`` of the
        block at counters (draw, position < width, this call's purpose, attempt), and
        ``words(attempt, cells)`` those of the cells ``(row, example, position)`` alone."""
        batch = self.keys.shape[0]
        out = torch.empty(self.count, batch, dims, dtype=self.dtype, device=self.device)
        key = (self.keys & _LOW32).view(1, -1, 1), _shift_right(self.keys, 32).view(1, -1, 1)
        position = torch.arange(width, device=self.device).view(1, 1, -1)
        cells = CACHE_BLOCK if self.device.type == "cpu" else DEVICE_BLOCK
        step = max(1, cells // max(1, batch * width))
        for first in range(0, self.count, step):
            rows = min(step, self.count - first)
            draw = torch.arange(self.start + first, self.start + first + rows, device=self.device)
            counter = draw.view(-1, 1, 1), position, self.purpose

            def words(attempt: int, cells=None, draw=draw, counter=counter) -> Words:
                if cells is None:
                    return philox4x32((*counter, attempt), key)
                row, example, place = cells
                cell_key = key[0].view(-1)[example], key[1].view(-1)[example]
                return philox4x32((draw[row], place, self.purpose, attempt), cell_key)

            out[first : first + rows] = values(words)[..., :dims]
        self.purpose += 1
        return out

    def uniform(self, dims: int) -> torch.Tensor:
        """``[n, B, dims]`` uniforms on (0, 1); four per Philox call."""

        def uniforms(words: WordsByAttempt) -> torch.Tensor:
            return open_uniform(torch.stack(words(0), dim=-1).flatten(-2))

        return self._fill(dims, -(-dims // 4), uniforms)

    def normal(self, dims: int) -> torch.Tensor:
        """``[n, B, dims]`` standard normals: Box-Muller on pairs of uniforms, both branches,
        r = sqrt(-2 log u_a), (r cos 2 pi u_b, r sin 2 pi u_b); four per call."""

        def box_muller(words: WordsByAttempt) -> torch.Tensor:
            w0, w1, w2, w3 = words(0)
            radius, angle = polar(torch.stack([w0, w2], dim=-1), torch.stack([w1, w3], dim=-1))
            pairs = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
            return pairs.flatten(-3)

        return self._fill(dims, -(-dims // 4), box_muller)

    def gamma(self, concentration: float, dims: int) -> torch.Tensor:
        """``[n, B, dims]`` Gamma(``concentration``, rate 1) values by Marsaglia & Tsang (2000):
        with d = a - 1/3, c = 1 / sqrt(9 d), x ~ N(0, 1), v = (1 + c x)^3, accept d v when
        v > 0 and log u < x^2 / 2 + d - d v + d log v; for a < 1, Gamma(a + 1) u'^(1/a).
        Attempt t of value (k, b, j) uses the words of counter (k, j, purpose, t) (x from the
        first two, u from the third, u' from the fourth of attempt 0), so the first accepted
        attempt is the same wherever the value is computed. Computed in float64."""
        if not concentration > 0:
            raise ValueError(f"gamma concentration must be > 0, got {concentration}")
        boosted = concentration < 1
        d = (concentration + 1 if boosted else concentration) - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)

        def candidates(words: Words) -> tuple[torch.Tensor, torch.Tensor]:
            """One attempt: the candidate d v and whether it is accepted."""
            w0, w1, w2, _ = words
            radius, angle = polar(w0, w1)
            x = radius * torch.cos(angle)
            v = (1.0 + c * x) ** 3
            log_v = torch.log(v.clamp_min(torch.finfo(torch.float64).tiny))
            accept = (v > 0) & (torch.log(open_uniform(w2)) < 0.5 * x**2 + d - d * v + d * log_v)
            return d * v, accept

        def marsaglia_tsang(words: WordsByAttempt) -> torch.Tensor:
            first = words(0)
            candidate, accept = candidates(first)
            value = torch.where(accept, candidate, math.nan)
            attempt = 1
            while bool((pending := value.isnan()).any()):  # a few % of cells, then fewer
                cells = pending.nonzero(as_tuple=True)
                candidate, accept = candidates(words(attempt, cells))
                value[cells] = torch.where(accept, candidate, math.nan)
                attempt += 1
            if boosted:
                value = value * open_uniform(first[3]) ** (1.0 / concentration)
            return value.clamp_min(torch.finfo(self.dtype).tiny)

        return self._fill(dims, dims, marsaglia_tsang)
