#!/usr/bin/env bash
# Fuzzes parrot's input parsers with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer.
#   bash scripts/fuzz.sh                  # CI smoke run: 60 s per target (3 targets, ~3.5 min with builds)
#   bash scripts/fuzz.sh 3600             # the longer run: an hour per target
#   bash scripts/fuzz.sh 600 image gguf   # some targets only
# Targets (tests/fuzz/fuzz_*.c): image (PNG/JPEG decoding + CLIP preprocessing, raw pixels of any geometry
# through the resampler), gguf (the GGUF reader and the tokenizer loaded from it), tokenizer (encode, decode
# and streamed decode with the shipped model's tokenizer; checks round trips). Each starts from its seed
# corpus tests/fuzz/corpus/<target>/ (kept as committed: new inputs go to build/fuzz/corpus/<target>/, which
# later runs continue from). A crash stops the run with the input saved in build/fuzz/artifacts/ — add it to
# tests/fuzz/corpus/<target>/ once fixed so every later run replays it.
# Needs clang and its runtime (Debian: clang libclang-rt-dev; scripts/install.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=${*:-image gguf tokenizer}
CC=${CLANG:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-dev)"; exit 1; }

out=build/fuzz
mkdir -p "$out/artifacts"
flags="-g -O1 -std=c11 -D_GNU_SOURCE -Icsrc $(pkg-config --cflags libpng libjpeg libutf8proc)
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
libs="$(pkg-config --libs libpng libjpeg libutf8proc) -lm -pthread"
common="csrc/util/error.c csrc/util/mem.c csrc/util/dtype.c"
declare -A srcs=(
    [image]="csrc/image/*.c"
    [gguf]="csrc/io/gguf.c csrc/kernels/quant.c csrc/text/*.c"
    [tokenizer]="csrc/io/gguf.c csrc/kernels/quant.c csrc/text/*.c"
)
export PARROT_FUZZ_MODEL=${PARROT_FUZZ_MODEL:-parrot/models/parrot-tiny-shapes.gguf}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in $targets; do
    [ -n "${srcs[$t]:-}" ] || { echo "fuzz.sh: unknown target '$t' (image, gguf, tokenizer)"; exit 1; }
    echo "== fuzz $t: build"
    # shellcheck disable=SC2086
    $CC $flags tests/fuzz/fuzz_$t.c $common ${srcs[$t]} $libs -o "$out/fuzz_$t"
    mkdir -p "$out/corpus/$t"
    echo "== fuzz $t: ${secs} s"
    # -rss_limit_mb: any input that makes the parser hold 2 GB is a bug; -timeout: so is one taking 10 s
    "$out/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/${t}-" "$out/corpus/$t" "tests/fuzz/corpus/$t" 2>"$out/$t.log" \
        || { tail -60 "$out/$t.log"; echo "fuzz.sh: target $t failed; the input is in $out/artifacts/"; exit 1; }
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$t.log" | tr '\n' ' '; echo
done
