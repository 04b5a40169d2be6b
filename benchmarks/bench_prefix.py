"""Time to first token of a second question about the same image, with and without the prefix KV cache.

Run from the repository root:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_prefix.py [-m MODEL] [--repeat N]

The first question fills the image-feature cache (and parks the system turn's KV cache); the second one, in
another language, then needs only the MoE routing, the splice and the prefill — with the prefix cache, the
prefill skips the system turn's positions. Only those are reusable exactly: the image's rows (and everything
after them) depend on the question through the MoE's routing. Both models answer identically (checked here).
Times are the best of N runs of one token (max_new_tokens=1) in one process; the ratio is what counts.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parrot  # noqa: E402
from parrot.model import default_model_path  # noqa: E402

QUESTIONS = ["What is in the picture?", "Что изображено на картинке?", "图片里有什么？", "O que há na imagem?"]


def ttft(model: parrot.Model, img: np.ndarray, q: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.run(img, q, max_new_tokens=1)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="a parrot .gguf (default: $PARROT_MODEL, else shipped)")
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    path = a.model or default_model_path()
    if "OPENBLAS_CORETYPE" in os.environ or "OPENBLAS_L2_SIZE" in os.environ:
        print("note: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set; run with env -u ... for figures")
    on = parrot.load(path, threads=a.threads)
    off = parrot.Model(on.path, threads=a.threads, prefix_cache_entries=0)
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for m in (on, off):                       # image features cached, prefix parked (on)
        m.run(img, QUESTIONS[0], max_new_tokens=1)
    for q in QUESTIONS[1:]:
        assert on.run(img, q, max_new_tokens=8).token_ids == off.run(img, q, max_new_tokens=8).token_ids
    r = on.run(img, QUESTIONS[1], max_new_tokens=1)
    before = on.prefix_cache_info()
    t_on = min(ttft(on, img, q, a.repeat) for q in QUESTIONS[1:])
    t_off = min(ttft(off, img, q, a.repeat) for q in QUESTIONS[1:])
    after = on.prefix_cache_info()
    per_hit = (after.positions_reused - before.positions_reused) // max(1, after.hits - before.hits)
    print(f"model: {os.path.basename(on.path)}, {on.threads} threads, ISA {parrot._core.kernel_isa()}")
    print(f"prompt: {int(r.timings['prompt_tokens'])} positions, of which the reused system prefix {per_hit}")
    print(f"second question, time to first token: {t_off * 1e3:.2f} ms without the prefix cache, "
          f"{t_on * 1e3:.2f} ms with it: {t_on / t_off:.3f}x")


if __name__ == "__main__":
    main()
