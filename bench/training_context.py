"""What choosing the training samples' memories costs as a profile grows.

A dataset build gives about 30% of a profile's training samples memories of the profile
(``services.persona_prompt.training_context``): the ones nearest each sample's own memory by
the rare words they share, and one drawn from the farther half of the rest. This prints the
time to choose them for every sample of a synthetic profile of N memories (40 words each;
the words drawn from a long-tailed vocabulary, as a person's notes repeat a few words and
name many things once or twice), per sample that carries memories, and the ratio of that
per-sample time to the smallest profile's: a cost that grows with all of a profile's
memories would make the ratio follow N.

    .venv/bin/python bench/training_context.py [--sizes 1000 4000 16000] [--seed 0]

Measured on the 2-core development machine, idle, one run each: 0.11 s, 1.15 s and 20.8 s
for 1000, 4000 and 16000 memories (0.38, 0.99 and 4.40 ms per sample carrying memories);
the choice as it was before (every other memory hashed and sorted for each sample), the
same script: 0.31 s, 5.39 s and 118.8 s (1.06, 4.64 and 25.1 ms), 5.7x the time at 16000.
The per-sample time still grows with the profile here: in this vocabulary most memories
share a word rarer than half the memories with most others, and the nearness is counted
over all of those.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.persona_prompt import Neighbours, training_context

COMMON = ["the", "and", "was", "with", "for", "that", "this", "have"]


def word(n: int) -> str:
    """A distinct word of letters for ``n`` (memory words are letters only)."""
    out = ""
    while True:
        n, d = divmod(n, 26)
        out += string.ascii_lowercase[d]
        if n == 0:
            return out + "x"  # never a plural "s" to fold


def profile(n: int, rng: random.Random) -> list[tuple[str, str]]:
    def one() -> str:
        if rng.random() < 0.4:
            return rng.choice(COMMON)
        return word(int(rng.paretovariate(1.1)) % 20000)

    return [(f"m{i:06d}", " ".join(one() for _ in range(40))) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    first = None
    print(f"{'memories':>9} {'index s':>8} {'carrying':>9} {'choose s':>9} {'ms each':>8} ratio")
    for n in args.sizes:
        memories = profile(n, rng)
        started = time.perf_counter()
        near = Neighbours(memories)
        built = time.perf_counter() - started
        started = time.perf_counter()
        carrying = sum(
            1 for mid, text in memories if training_context(mid, text, memories, near=near)
        )
        took = time.perf_counter() - started
        each = took / max(carrying, 1)
        first = first or each
        ms = each * 1000
        print(f"{n:>9} {built:>8.2f} {carrying:>9} {took:>9.2f} {ms:>8.2f} {each / first:.1f}x")


if __name__ == "__main__":
    main()
