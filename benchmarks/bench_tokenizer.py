"""Tokenizer throughput: parrot's C tokenizer against Hugging Face `tokenizers`, both on one thread, in the
same process, on the same tokenizer and text.

    python benchmarks/bench_tokenizer.py [--tokenizer-dir DIR] [--repeat 3]

Without --tokenizer-dir, a byte-level BPE configured as Qwen2's tokenizer.json is trained on the multilingual
test corpus (tests/test_tokenizer.py); with it, DIR's tokenizer.json (e.g. a real Qwen1.5 checkpoint) is used.
Workloads: ~10,000 short strings encoded one call each (chat-style use), and one long multilingual document.
Reported: tokens per second of each and the ratio parrot / HF (target >= 1).
"""
import os

# one thread for tokenizers (rayon) before it is imported
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from parrot.tokenizer import Tokenizer as ParrotTokenizer  # noqa: E402
from test_tokenizer import _corpus_lines, build_test_strings, qwen2_like_tokenizer, write_gguf  # noqa: E402
from bench_parrot import cpu_info  # noqa: E402


def machine_info():
    cpu, _, ncpu = cpu_info()
    return (f"{platform.system()} {platform.machine()}, CPU: {cpu}, {ncpu} logical CPUs, "
            f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}")


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer-dir", help="directory with a Qwen2 tokenizer.json (default: train one)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(machine_info())

    with tempfile.TemporaryDirectory() as d:
        if args.tokenizer_dir:
            src = args.tokenizer_dir
            hf = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
        else:
            src = d
            hf = qwen2_like_tokenizer(vocab_size=8000)
            hf.save(os.path.join(d, "tokenizer.json"))
        ours = ParrotTokenizer(write_gguf(os.path.join(d, "t.gguf"), src))
    print(f"vocabulary: {ours.n_tokens} tokens")

    short = build_test_strings()
    long_doc = "\n".join(list(_corpus_lines()) + short[:2000]) * 8
    workloads = [
        (f"{len(short)} short strings, one call each", short),
        (f"one document of {len(long_doc.encode()) / 1e6:.1f} MB", [long_doc]),
    ]
    for name, texts in workloads:
        n_tok = sum(len(ours.encode(t)) for t in texts)  # also warms both caches
        assert all(ours.encode(t) == hf.encode(t, add_special_tokens=False).ids for t in texts[:2000])
        t_hf = best_time(lambda: [hf.encode(t, add_special_tokens=False) for t in texts], args.repeat)
        t_us = best_time(lambda: [ours.encode(t) for t in texts], args.repeat)
        print(f"{name}: {n_tok} tokens | HF tokenizers {n_tok / t_hf:,.0f} tok/s | parrot {n_tok / t_us:,.0f} "
              f"tok/s | ratio {t_hf / t_us:.2f}x")


if __name__ == "__main__":
    main()
