"""The cost of per-example random streams, against the design they replaced and against no keying.

For one importance-sampling batch (K draws of D standard normals for each of B examples, the
binarized-MNIST shape by default), measured in the same run on the same device:

- ``Draws(...).normal(D)``: the counter-based streams (Philox4x32-10 on a grid of (draw,
  position) counters under every example's key, Box-Muller), the whole batch at once;
- reseeding loop (the previous design): for every example and every block of 256 draws, seed the
  global generator from the example's key and call ``torch.randn``;
- ``torch.randn(K, B, D)``: one global stream, no keying (the floor);
- and, as the scale the noise is paid against, one pass of the ``experiment=bmnist_vae``
  decoder (gated MLP 40-300-300-784) over the same K x B latents.

Printed: seconds for each, the ratios, and the streams' share of noise + decoder.

    python benchmarks/noise_streams.py --draws 5000 --examples 100 --dims 40
"""

from __future__ import annotations

import argparse
import time

import torch

from vaelik.inference.streams import Draws, example_keys, substream_keys

#: draws per reseeding in the previous design
RESEED_BLOCK = 256


def reseeding_loop(keys: torch.Tensor, draws: int, dims: int) -> torch.Tensor:
    """The previous design: the global generator reseeded per example and block of draws."""
    columns = []
    with torch.random.fork_rng(devices=[]):
        for key in keys.tolist():
            blocks = []
            for block in range(-(-draws // RESEED_BLOCK)):
                torch.manual_seed(int(substream_keys(torch.tensor([key]), block)) & (2**63 - 1))
                blocks.append(torch.randn(RESEED_BLOCK, dims))
            columns.append(torch.cat(blocks)[:draws])
    return torch.stack(columns, dim=1)


def seconds(function, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5000, help="K")
    parser.add_argument("--examples", type=int, default=100, help="B")
    parser.add_argument("--dims", type=int, default=40, help="D, the latent size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    k, b, d = args.draws, args.examples, args.dims
    keys = example_keys(0, torch.arange(b))
    decoder = torch.nn.Sequential(
        torch.nn.Linear(d, 600), torch.nn.GLU(), torch.nn.Linear(300, 600), torch.nn.GLU()
    )
    head = torch.nn.Linear(300, 784)
    z = torch.randn(k * b, d)

    @torch.no_grad()
    def decode() -> None:
        for rows in torch.split(z, 10_000):
            head(decoder(rows))

    timings = {
        "streams": seconds(lambda: Draws(keys, 0, k).normal(d), args.repeats),
        "reseeding": seconds(lambda: reseeding_loop(keys, k, d), args.repeats),
        "randn": seconds(lambda: torch.randn(k, b, d), args.repeats),
        "decoder": seconds(decode, args.repeats),
    }
    print(f"K={k} draws x B={b} examples x D={d} normals, {torch.get_num_threads()} threads")
    for name, value in timings.items():
        print(f"  {name:10s} {value:8.3f} s")
    streams = timings["streams"]
    print(f"reseeding loop / streams: {timings['reseeding'] / streams:.2f}x")
    print(f"streams / torch.randn: {streams / timings['randn']:.1f}x")
    share = streams / (streams + timings["decoder"])
    print(f"streams' share of noise + one decoder pass: {100 * share:.1f}%")


if __name__ == "__main__":
    main()
