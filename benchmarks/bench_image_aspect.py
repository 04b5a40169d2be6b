"""Preprocessing cost against image shape: is it linear in the pixels, whatever the aspect ratio?

Run from the repository root:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_image_aspect.py

For pixel counts N = 10^5, 10^6, 10^7 it times parrot.image.clip_pixels (pad to square, bicubic resize to 336,
crop) on a square image and on 1×N, N×1, 2×N/2 strips, best of 3, and prints each time with its ratio to the
square image of the same N (same run) and the time per pixel. Pillow's pad-then-resize on 1×N strips is timed
for small N, to show the quadratic cost of building the square that parrot never builds.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from parrot import image as pimg  # noqa: E402


def best(f, n=3):
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def main() -> None:
    print("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for this run" if "OPENBLAS_CORETYPE" not in os.environ
          else "note: OPENBLAS_CORETYPE is set (run with env -u ..., see the docstring)")
    r = np.random.default_rng(0)
    print(f"{'N':>10} {'shape (h×w)':>16} {'ms':>9} {'× square':>9} {'ns/pixel':>9}")
    for n in (10**5, 10**6, 10**7):
        s = int(math.isqrt(n))
        shapes = [(s, s), (1, n), (n, 1), (2, n // 2), (n // 2, 2)]
        times = {}
        for h, w in shapes:
            a = r.integers(0, 256, (h, w, 3), dtype=np.uint8)
            times[(h, w)] = best(lambda: pimg.clip_pixels(a))
        for h, w in shapes:
            t = times[(h, w)]
            print(f"{n:>10} {f'{h}×{w}':>16} {t * 1e3:9.2f} {t / times[(s, s)]:9.2f} {t / (h * w) * 1e9:9.2f}")
    try:
        from PIL import Image
    except ImportError:
        return
    print("\nPillow pad-then-resize (the reference pipeline) on 1×N strips, against parrot:")
    for n in (1000, 2000, 4000):
        a = r.integers(0, 256, (n, 1, 3), dtype=np.uint8)

        def pil():
            sq = Image.new("RGB", (n, n), (122, 116, 104))
            sq.paste(Image.fromarray(a), ((n - 1) // 2, 0))
            sq.resize((336, 336), Image.BICUBIC, reducing_gap=None)
        tp, tq = best(pil), best(lambda: pimg.clip_pixels(a))
        print(f"  1×{n}: Pillow {tp * 1e3:8.2f} ms, parrot {tq * 1e3:6.3f} ms ({tp / tq:,.0f}×)")


if __name__ == "__main__":
    main()
