"""Converter at scale: peak RSS and throughput of `parrot convert` against the disk's read speed, same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_convert.py CHECKPOINT_DIR --clip CLIP_DIR --dtype q4_0 q8_0 --out-dir DIR

For each dtype: the checkpoint's (and CLIP's) pages are dropped from the page cache (posix_fadvise DONTNEED, no
root needed), the bound is measured as the time to read every weight file once with 16 MiB reads (what any
converter must do at least), the pages are dropped again, and `python -m parrot convert` runs under
`/usr/bin/time -v` (peak RSS = "Maximum resident set size"). Reported: wall time, peak RSS, input GB/s, and the
ratio of the converter's time to the read bound (1.0 = as fast as reading the input), its CPU time, and the load
average (other processes on a shared machine slow it). The output is deleted.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the converter (the benchmark rule of this repository).
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def weight_files(dirs):
    return [os.path.join(d, n) for d in dirs for n in sorted(os.listdir(d))
            if n.endswith((".safetensors", ".bin"))]


def drop_cache(files):
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(files):
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    total = 0
    t = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--clip")
    ap.add_argument("--dtype", nargs="+", default=["q4_0", "q8_0"])
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    files = weight_files([a.checkpoint] + ([a.clip] if a.clip else []))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    print(f"parrot convert benchmark; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for the converter; {os.cpu_count()} "
          f"CPUs; {len(files)} weight files")
    for dtype in a.dtype:
        drop_cache(files)
        nbytes, read_s = read_all(files)
        drop_cache(files)
        load_before = os.getloadavg()[0]
        out = os.path.join(a.out_dir, f"bench-convert-{dtype}.gguf")
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "parrot", "convert", a.checkpoint, "-o", out,
               "--dtype", dtype, "--force", "-q"] + (["--clip", a.clip] if a.clip else [])
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            print(p.stderr[-3000:])
            sys.exit(1)
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
        cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", p.stderr).group(1)) for k in ("User", "System"))
        out_bytes = os.path.getsize(out)
        os.unlink(out)
        print(f"{dtype}: input {nbytes / 1e9:.2f} GB -> output {out_bytes / 1e9:.2f} GB | read bound {read_s:.1f} s "
              f"({nbytes / read_s / 1e9:.2f} GB/s) | convert {wall:.1f} s ({nbytes / wall / 1e9:.2f} GB/s), "
              f"{wall / read_s:.2f}x the read bound | CPU {cpu:.0f} s (user+sys) | peak RSS {rss_kb / 1024 ** 2:.2f} GiB | "
              f"load average before {load_before:.1f}")
        sys.stdout.flush()
    drop_cache(files)


if __name__ == "__main__":
    main()
