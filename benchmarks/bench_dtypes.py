"""Storage types compared on the model shipped here: file size, speed and accuracy of f32 / f16 / bf16 / q8_0 / q4_0.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_dtypes.py [--scenes 110]

training/checkpoint (the checkpoint the shipped model is converted from) is converted to every dtype; each file
answers the held-out questions of training/make_heldout.py (110 unseen scenes, colour / shape / count, multiple
choice and open, six languages) greedily. Reported per dtype: file size, total answer time for all questions
(1 thread; ratio to f32 in the same run), accuracy, and the fraction of answers identical to the f32 file's.
The tiny model is compute-light, so its speed ratios mostly show per-token overheads; the bandwidth-bound decode
speeds of large files are in benchmarks/RESULTS.md (bench_parrot.py).
"""
import argparse
import base64
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CKPT = os.path.join(ROOT, "training", "checkpoint")


def main():
    import parrot
    from parrot.evaluate.extract import extract_letter
    from training import data
    from training.evaluate import read_tsv
    from training.make_heldout import write_heldout

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=110)
    a = ap.parse_args()
    print("dtype benchmark on training/checkpoint (1 thread); OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE should be unset: "
          f"{'unset' if 'OPENBLAS_CORETYPE' not in os.environ else 'SET'}")
    with tempfile.TemporaryDirectory() as tmp:
        write_heldout(tmp, n_scenes=a.scenes, seed=2024)
        qs = []
        for lang in data.LANGS:
            code = data.MMMB_FILE_CODE[lang]
            for r in read_tsv(os.path.join(tmp, f"mmmb_tiny_{code}.tsv")):
                options = {k: r[k] for k in "ABCD" if r[k]}
                qs.append(("mc", base64.b64decode(r["image"]), data.mmmb_prompt(r["question"], options, lang),
                           r["answer"], options))
            for r in read_tsv(os.path.join(tmp, f"open_tiny_{code}.tsv")):
                qs.append(("open", base64.b64decode(r["image"]), r["question"], r["answer"], None))
        base_answers, base_time = None, None
        print(f"{len(qs)} questions\n\n| dtype | file MB | answer time s (÷ f32) | accuracy mc / open | same answer "
              f"as f32 |\n|---|---|---|---|---|")
        for dtype in ("f32", "f16", "bf16", "q8_0", "q4_0"):
            path = parrot.convert(CKPT, os.path.join(tmp, f"{dtype}.gguf"), dtype=dtype, progress=False,
                                  log=lambda s: None)
            m = parrot.load(path, threads=1, image_cache_bytes=0)
            m.run(qs[0][1], qs[0][2], max_new_tokens=16)  # warm-up
            t = time.perf_counter()
            texts = [m.run(png, q, max_new_tokens=16).text for _, png, q, _, _ in qs]
            secs = time.perf_counter() - t
            ok = {"mc": [], "open": []}
            for (form, _, _, want, options), text in zip(qs, texts):
                ok[form].append(extract_letter(text, options) == want if form == "mc" else text == want)
            if base_answers is None:
                base_answers, base_time = texts, secs
            same = sum(x == y for x, y in zip(texts, base_answers)) / len(texts)
            print(f"| {dtype} | {os.path.getsize(path) / 1e6:.2f} | {secs:.2f} ({secs / base_time:.2f}) | "
                  f"{sum(ok['mc']) / len(ok['mc']):.3f} / {sum(ok['open']) / len(ok['open']):.3f} | {same:.3f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
