"""Decode + CLIP preprocessing: parrot (C) against Pillow + transformers' PIL CLIPImageProcessor.

Run from the repository root:  python benchmarks/bench_image.py [--repeat N]

Both sides start from the encoded file bytes and end at the 3×336×336 float32 tensor, doing Parrot's steps
(convert('RGB'), pad to square with the mean colour, bicubic resize, crop, rescale, normalise). The images are
made here: a 4000×3000 JPEG and a 1024×768 PNG of smooth structure plus noise (photo-like entropy). Times are
the best of N runs, in one process, one thread each.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from parrot import image as pimg  # noqa: E402


def make_image(w: int, h: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 97 + c) * np.cos(y / 73 - c) for c in (0.0, 1.0, 2.0)], -1)
    return np.clip(base + r.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def clip_processor():
    import transformers
    cls = getattr(transformers, "CLIPImageProcessorPil", None)
    if cls is not None:
        return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return transformers.CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                           use_fast=False)


def reference(data: bytes, proc) -> np.ndarray:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    bg = tuple(int(m * 255) for m in proc.image_mean)
    if w != h:
        s = max(w, h)
        sq = Image.new("RGB", (s, s), bg)
        sq.paste(im, ((s - w) // 2, (s - h) // 2))
        im = sq
    return proc.preprocess(im, return_tensors="np")["pixel_values"][0]


def best(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    print(f"machine: {platform.machine()} {platform.processor() or ''} | cpus: {os.cpu_count()} | "
          f"python {platform.python_version()} | Pillow {Image.__version__}")
    print("threads: parrot 1 (C, GIL released), Pillow 1")
    proc = clip_processor()
    cases = []
    b = io.BytesIO()
    Image.fromarray(make_image(4000, 3000, 1)).save(b, "JPEG", quality=90)
    cases.append(("4000x3000 JPEG", b.getvalue()))
    b = io.BytesIO()
    Image.fromarray(make_image(1024, 768, 2)).save(b, "PNG")
    cases.append(("1024x768 PNG", b.getvalue()))
    print(f"{'image':16} {'bytes':>9} {'parrot ms':>10} {'Pillow+CLIP ms':>15} {'speed-up':>9}  identical")
    for name, data in cases:
        ours = pimg.preprocess(data)
        ref = reference(data, proc)
        t_ours = best(lambda: pimg.preprocess(data), args.repeat) * 1e3
        t_ref = best(lambda: reference(data, proc), args.repeat) * 1e3
        print(f"{name:16} {len(data):9d} {t_ours:10.1f} {t_ref:15.1f} {t_ref / t_ours:8.2f}x  "
              f"{bool(np.array_equal(ours, ref))}")


if __name__ == "__main__":
    main()
