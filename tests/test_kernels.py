"""The kernels: every SIMD table against the scalar reference, and the reference against independent
computations (numpy in float64, the gguf package's quantisers, numpy's float16).

Sizes are deliberately odd: not multiples of the vector width (8/16 floats) nor of the tile kernels' 4 weight
rows × 2 activation rows nor of the attention's query blocks (48 micro-kernel strips: 192, 288 or 672 queries)
and key tiles (up to 1024), nor of the packed GEMM's tiles (4×8, 6×16, 14×32) and 256-value K blocks."""
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from parrot import _core

ISAS = _core.kernel_isas()
SIMD = [i for i in ISAS if i != "scalar"]
EPS = 2.0 ** -24  # f32 unit roundoff


def weight_raw(w, dtype):
    """uint8 rows of w stored as dtype, and w as the kernels see it (after rounding / quantising)."""
    if dtype == "f32":
        raw = w.astype(np.float32).view(np.uint8)
    elif dtype == "f16":
        raw = w.astype(np.float16).view(np.uint8)
    elif dtype == "bf16":
        b = w.astype(np.float32).view(np.uint32)
        raw = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16).view(np.uint8)
    else:
        raw = _core.quantize(w.astype(np.float32), dtype)
    return np.ascontiguousarray(raw.reshape(w.shape[0], -1)), _core.dequantize(raw.reshape(w.shape[0], -1), dtype, w.shape[1])


def act_q8_0(x):
    """x rows as the q8_0-quantised activations the int8 kernels multiply (scalar activation quantiser)."""
    out = []
    for row in x:
        q = _core.quantize_act(row, "scalar").reshape(-1, 34)
        d = q[:, :2].copy().view(np.float16).astype(np.float64)
        out.append((q[:, 2:].view(np.int8).astype(np.float64) * d).reshape(-1))
    return np.array(out)


def bound(wf, x):
    """Worst-case error of an f32 dot product of length k in any summation order: k·u·Σ|w||x| (γ_k)."""
    k = wf.shape[1]
    return (k + 2) * EPS * (np.abs(x).astype(np.float64) @ np.abs(wf).astype(np.float64).T) + 1e-30


CASES = [  # (dtype, rows, cols, n): n = 1..8 runs the matrix-vector path, larger n the tiled/sgemm path
    ("f32", 7, 37, 1), ("f32", 33, 1031, 3), ("f32", 13, 100, 67),
    ("f16", 7, 37, 1), ("f16", 33, 1031, 4), ("f16", 13, 100, 67),
    ("bf16", 7, 37, 2), ("bf16", 33, 1031, 1), ("bf16", 13, 100, 67),
    ("q8_0", 7, 32, 1), ("q8_0", 33, 32 * 37, 3), ("q8_0", 13, 96, 67), ("q8_0", 70, 32 * 5, 9),
    ("q4_0", 7, 32, 1), ("q4_0", 33, 32 * 37, 3), ("q4_0", 13, 96, 67), ("q4_0", 70, 32 * 5, 9),
]


def paths(dtype, n):
    """Matrix-vector for n ≤ 8; for more rows the packed GEMM (weights widened to f32 per panel, our micro-kernel)
    and the widened panels + OpenBLAS sgemm (both with f32 activations), and for quantised weights the int8 tiles
    (quantised activations)."""
    if n <= 8:
        return ["auto"]
    return ["tiles", "panels", "gemm"] if dtype.startswith("q") else ["auto", "panels", "gemm"]


def f32_activations(dtype, path):
    """True where the kernels multiply the f32 activations (not their q8_0 quantisation)."""
    return not dtype.startswith("q") or path in ("panels", "gemm")


@pytest.mark.parametrize("dtype,rows,cols,n", CASES)
def test_scalar_reference_matches_float64(dtype, rows, cols, n):
    rng = np.random.default_rng(rows * 1000 + cols + n)
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    x = rng.normal(size=(n, cols)).astype(np.float32)
    raw, wf = weight_raw(w, dtype)
    for path in paths(dtype, n):
        got = _core.matmul(raw, dtype, cols, x, isa="scalar", path=path)
        xs = x.astype(np.float64) if f32_activations(dtype, path) else act_q8_0(x)
        want = xs @ wf.astype(np.float64).T
        # the q8_0 scales are f16 products evaluated in f32: add 2 roundings per block to the sum bound
        assert (np.abs(got - want) <= 4 * bound(wf, xs)).all(), path


@pytest.mark.skipif(not SIMD, reason="no SIMD instruction set on this CPU/build")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("dtype,rows,cols,n", CASES)
def test_simd_matmul_matches_scalar(isa, dtype, rows, cols, n):
    rng = np.random.default_rng(rows * 1000 + cols + n + 1)
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    x = rng.normal(size=(n, cols)).astype(np.float32)
    raw, wf = weight_raw(w, dtype)
    for path in paths(dtype, n):
        ref = _core.matmul(raw, dtype, cols, x, isa="scalar", path=path)
        got = _core.matmul(raw, dtype, cols, x, isa=isa, threads=2, path=path)
        # same products, different summation order (integer block sums are exact): both within γ_k of the truth
        xs = x if f32_activations(dtype, path) else act_q8_0(x)
        assert (np.abs(got - ref) <= 8 * bound(wf, xs)).all(), path


def test_matmul_repeat_times_the_same_product():
    """`repeat` (bench_decode's kernel timing) runs the same product: the same bits as one call, with the fastest
    run's seconds, a positive time no longer than the whole call's wall time."""
    rng = np.random.default_rng(7)
    raw = _core.quantize(rng.normal(size=(96, 256)).astype(np.float32), "q4_0")
    x = rng.normal(size=(2, 256)).astype(np.float32)
    once = _core.matmul(raw, "q4_0", 256, x, threads=2)
    t = time.perf_counter()
    y, sec = _core.matmul(raw, "q4_0", 256, x, threads=2, repeat=3)
    wall = time.perf_counter() - t
    assert np.array_equal(y, once) and 0 < sec <= wall
    for bad in (-1, 100001):
        with pytest.raises(ValueError, match="repeat must be 0..100000"):
            _core.matmul(raw, "q4_0", 256, x, repeat=bad)


# Packed-GEMM shapes around the micro-kernels' tiles (scalar 4×8, AVX2 6×16, AVX-512 14×32 activation × weight
# rows) and the 256-value K blocks: full tiles, ragged edges on both sides, one row short of and past a tile,
# several K blocks with a short last one, more weight rows than one 256-row panel.
GEMM_SHAPES = [(5, 8, 64), (14, 32, 256), (13, 31, 288), (15, 33, 544), (29, 70, 96), (43, 17, 800),
               (6, 300, 64), (57, 47, 32 * 23)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "q8_0", "q4_0"])
@pytest.mark.parametrize("n,rows,cols", GEMM_SHAPES)
def test_packed_gemm_ragged_shapes(isa, dtype, n, rows, cols):
    """Every table's micro-kernel through the packed path against numpy in float64 on the same (rounded or
    quantised) weights, and against the scalar reference micro-kernel: both within the summation-order bound
    γ_k·Σ|w||x| (the packed path multiplies f32 activations by exactly widened weights; only the order of the
    f32 additions differs: blocks of 256 values, within a block one FMA chain per output)."""
    if dtype.startswith("q") and cols % 32:
        pytest.skip("q*_0 rows are whole 32-value blocks")
    rng = np.random.default_rng(n * 7919 + rows * 31 + cols)
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    x = rng.normal(size=(n, cols)).astype(np.float32)
    raw, wf = weight_raw(w, dtype)
    got = _core.matmul(raw, dtype, cols, x, isa=isa, threads=2, path="gemm")
    want = x.astype(np.float64) @ wf.astype(np.float64).T
    assert got.shape == want.shape
    assert (np.abs(got - want) <= bound(wf, x)).all()
    ref = _core.matmul(raw, dtype, cols, x, isa="scalar", path="gemm")
    assert (np.abs(got - ref) <= 2 * bound(wf, x)).all()
    # thread count does not change a single bit: each output's K blocks are summed in a fixed order
    assert np.array_equal(got, _core.matmul(raw, dtype, cols, x, isa=isa, threads=1, path="gemm"))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0", "q4_0"])
def test_packed_gemm_widens_exactly(isa, dtype):
    """The packed GEMM on f16/bf16/q8_0/q4_0 weights gives bit for bit what it gives on the same values widened to
    f32 beforehand (numpy's float16, the reference dequantiser): a weight panel is widened exactly and lands where
    an f32 row would, also where q8_0 rows are dequantised while they are transposed (8 rows from one part; the
    rows of a last partial group and of rows from two parts go through the rows first)."""
    rng = np.random.default_rng(17)
    rows, cols, n = 77, 32 * 19, 45  # 9 groups of 8 rows + 5; 2 K blocks + a short one
    raw, wf = weight_raw(rng.normal(size=(rows, cols)).astype(np.float32), dtype)
    x = rng.normal(size=(n, cols)).astype(np.float32)
    f32 = np.ascontiguousarray(wf.astype(np.float32)).view(np.uint8)
    got = _core.matmul(raw, dtype, cols, x, isa=isa, threads=2, path="gemm")
    assert np.array_equal(got, _core.matmul(f32, "f32", cols, x, isa=isa, threads=2, path="gemm"))
    parts = [raw[:37], raw[37:]]  # parts of one product: groups of 8 rows straddle the two
    b = [None, None]
    fused = _core.matmul_fused(parts, dtype, cols, x, b, "none", None, isa=isa, threads=2, path="gemm")
    assert np.array_equal(fused, got)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act,residual", [("none", False), ("quick_gelu", True), ("gelu", True)])
def test_packed_gemm_rows_do_not_depend_on_the_others(isa, act, residual):
    """An activation row's outputs are the same bits whether the row sits in a full strip of MR rows or in the
    last, partial one (the table's micro-kernel for fewer rows sums each output in the same order as the full
    one), and so is the epilogue on it: every prefix of the rows gives the same first rows."""
    rng = np.random.default_rng(23)
    rows, cols, n = 70, 32 * 9, 57
    raw, _ = weight_raw(rng.normal(size=(rows, cols)).astype(np.float32), "q8_0")
    x = rng.normal(size=(n, cols)).astype(np.float32)
    bias = [rng.normal(size=rows).astype(np.float32)]
    res0 = rng.normal(size=(n, rows)).astype(np.float32)
    full = _core.matmul(raw, "q8_0", cols, x, isa=isa, threads=2, path="gemm")
    res_full = res0.copy() if residual else None
    full_f = _core.matmul_fused([raw], "q8_0", cols, x, bias, act, res_full, isa=isa, threads=2, path="gemm")
    for m in (1, 2, 3, 4, 5, 6, 7, 13, 15, 29, 43, 56):  # every remainder of the 4-, 6- and 14-row strips
        assert np.array_equal(_core.matmul(raw, "q8_0", cols, x[:m], isa=isa, threads=2, path="gemm"), full[:m]), m
        res = res0[:m].copy() if residual else None
        y = _core.matmul_fused([raw], "q8_0", cols, x[:m], bias, act, res, isa=isa, threads=2, path="gemm")
        assert np.array_equal(y, full_f[:m]), m
        if residual:
            assert np.array_equal(res, res_full[:m]), m


def act_ref(y, act):
    """float64 activations as transformers defines them: quick_gelu y·σ(1.702y), gelu the exact erf form"""
    if act == "quick_gelu":
        return y / (1 + np.exp(-1.702 * y))
    if act == "gelu":
        import math
        return 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    return y


# q/k/v-like parts whose rows straddle the micro-kernels' NR-row groups (8, 16, 32), with and without biases;
# ragged K blocks and activation strips as in GEMM_SHAPES. n ≥ 256: the separate path multiplies f32
# activations too (fewer rows of q8_0/q4_0 weights take the int8 kernels on quantised activations)
FUSED_CASES = [((31, 33, 17), (True, False, True), 288, 263), ((40,), (True,), 96, 281), ((8, 8), (False, False), 64, 266)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("parts,biased,cols,n", FUSED_CASES)
@pytest.mark.parametrize("act,residual", [("none", False), ("none", True), ("quick_gelu", False), ("gelu", True)])
def test_fused_products_and_epilogue(isa, dtype, parts, biased, cols, n, act, residual):
    """pr_matmul_fused (the vision tower's layers): several weights side by side in one product, then bias,
    activation and residual, against numpy in float64 on the same (rounded or quantised) weights. The packed
    GEMM with the epilogue inside its tiles and the separate path (each weight through pr_matmul, the
    epilogue as a pool job) are both within the product's summation bound γ_k·Σ|w||x| (times the activation's
    slope, ≤ 1.13 for both GELUs) plus a few roundings of the epilogue's own values (bias add, the
    activation's exp/erf to a few ulp, residual add): 8 ulp of the largest of them."""
    rng = np.random.default_rng(len(parts) * 100 + cols + n)
    ws = [rng.normal(size=(r, cols)).astype(np.float32) for r in parts]
    raws, wfs = zip(*(weight_raw(w, dtype) for w in ws))
    biases = [rng.normal(size=r).astype(np.float32) if b else None for r, b in zip(parts, biased)]
    x = rng.normal(size=(n, cols)).astype(np.float32)
    wf = np.concatenate(wfs)
    b = np.concatenate([bb if bb is not None else np.zeros(r, np.float32) for bb, r in zip(biases, parts)])
    res0 = rng.normal(size=(n, sum(parts))).astype(np.float32) if residual else None
    pre = x.astype(np.float64) @ wf.astype(np.float64).T + b
    want_y = act_ref(pre, act)
    tol = 1.13 * bound(wf, x) + 8 * EPS * (np.abs(pre) + np.abs(b) + np.abs(want_y))
    outs = {}
    for path in ("gemm", "separate"):
        for threads in (2, 1):
            res = res0.copy() if residual else None
            y = _core.matmul_fused(list(raws), dtype, cols, x, biases, act, res, isa=isa, threads=threads, path=path)
            assert (np.abs(y - want_y) <= tol).all(), (path, threads)
            if residual:
                assert (np.abs(res - (res0 + want_y)) <= tol + 4 * EPS * np.abs(res0 + want_y)).all(), (path, threads)
            outs[path, threads] = (y, res)
    # the GEMM's tiles and epilogue segments do not depend on the thread count: not a bit changes (the separate
    # path's products may be OpenBLAS's, whose blocking follows each thread's slice)
    for a, bb in zip(outs["gemm", 2], outs["gemm", 1]):
        assert a is None or np.array_equal(a, bb)


def test_matmul_deterministic_and_thread_count_independent():
    rng = np.random.default_rng(5)
    for dtype in ("f32", "bf16", "q8_0", "q4_0"):
        w = rng.normal(size=(101, 320)).astype(np.float32)
        raw, _ = weight_raw(w, dtype)
        for n in (1, 40):
            x = rng.normal(size=(n, 320)).astype(np.float32)
            for path in paths(dtype, n):
                a = _core.matmul(raw, dtype, 320, x, threads=2, path=path)
                b = _core.matmul(raw, dtype, 320, x, threads=2, path=path)
                assert np.array_equal(a, b), dtype
                if path in ("tiles", "gemm") or n == 1:  # our kernels: each element summed in a fixed order
                    assert np.array_equal(a, _core.matmul(raw, dtype, 320, x, threads=1, path=path)), dtype


def dequantize_by_hand(raw, dtype):
    """q8_0 / q4_0 rows (uint8, ggml's block layout) to float64 in numpy: d·q per block (d an f16 scale;
    q8_0: 32 int8; q4_0: 16 bytes, value i the low nibble of byte i and value i+16 its high nibble, minus 8)."""
    size = 34 if dtype == "q8_0" else 18
    blocks = raw.reshape(raw.shape[0], -1, size)
    d = blocks[:, :, :2].copy().view(np.float16).astype(np.float64)
    if dtype == "q8_0":
        q = blocks[:, :, 2:].view(np.int8).astype(np.float64)
    else:
        b = blocks[:, :, 2:].astype(np.int16)
        q = np.concatenate([(b & 15) - 8, (b >> 4) - 8], axis=2).astype(np.float64)
    return (d * q).reshape(raw.shape[0], -1)


# The int8 kernels behind decoding (n ≤ 8 activation rows: one or a batch of sequences) and short prompts:
# weight rows around the kernels' 4-row passes, activation rows around the AVX-512 kernels' 2 (q8_0) and 4 (q4_0)
# per pass, block counts odd and even (the AVX-512 q8_0 kernel takes blocks in pairs).
# q4_0 rows are held in superblocks of 16 blocks (kernels/quant.h): rows of one short superblock, whole ones, and
# whole ones with a short last one; the last two shapes: AVX-512's prepared activations in parts, and rows too
# long for them (the AVX2 kernel's fallback).
FEW_SHAPES = [(1, 1, 32), (2, 3, 64), (3, 5, 96), (4, 7, 32 * 9), (5, 13, 32 * 38), (7, 6, 32 * 3), (8, 70, 32 * 37),
              (1, 9, 32 * 4), (2, 5, 32 * 8), (3, 4, 32 * 7), (6, 11, 32 * 16), (1, 17, 32 * 28), (5, 3, 32 * 33),
              (8, 80, 32 * 400), (1, 3, 32 * 3100)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n,rows,cols", FEW_SHAPES)
def test_int8_matvec_matches_numpy(isa, dtype, n, rows, cols):
    """Every table's q8_0/q4_0 kernel for few activation rows against numpy in float64 on the hand-dequantised
    weights and activations: the integer block sums are exact, so the only errors are f32 roundings of the
    scale product d_w·d_x, of its product with the block sum and of the sum over blocks (any order): within
    4·γ_k·Σ|w||x| as for the scalar reference above."""
    rng = np.random.default_rng(n * 7919 + rows * 31 + cols)
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    x = rng.normal(size=(n, cols)).astype(np.float32)
    raw = np.ascontiguousarray(_core.quantize(w, dtype).reshape(rows, -1))
    wf = dequantize_by_hand(raw, dtype)
    xs = dequantize_by_hand(np.stack([_core.quantize_act(row, "scalar") for row in x]), "q8_0")
    got = _core.matmul(raw, dtype, cols, x, isa=isa, threads=2)
    assert got.shape == (n, rows)
    assert (np.abs(got - xs @ wf.T) <= 4 * bound(wf, xs)).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("blocks", [16 + 3, 16 + 5, 32 + 11, 16 + 9])
def test_q4_0_short_superblock_reads_only_its_scales(isa, blocks):
    """A row's last superblock of m < 16 blocks has only m scales before its nibbles: kernels that read its scales
    in wider words (AVX2: 32-bit words of two) must not let the first nibble bytes after them count. Here those
    two bytes read as an f16 +Inf (0x7C00), which a missing mask turns into NaN (Inf · 0) or Inf; the products
    must match numpy as in the test above."""
    rng = np.random.default_rng(blocks)
    rows, cols = 9, 32 * blocks
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    raw = np.ascontiguousarray(_core.quantize(w, "q4_0").reshape(rows, -1))
    first = blocks // 16 * 16 * 18  # the short superblock's first block, in the file's layout
    raw[:, first + 2], raw[:, first + 3] = 0x00, 0x7C
    x = rng.normal(size=(3, cols)).astype(np.float32)
    wf = dequantize_by_hand(raw, "q4_0")
    xs = dequantize_by_hand(np.stack([_core.quantize_act(row, "scalar") for row in x]), "q8_0")
    got = _core.matmul(raw, "q4_0", cols, x, isa=isa, threads=2)
    assert np.isfinite(got).all()
    assert (np.abs(got - xs @ wf.T) <= 4 * bound(wf, xs)).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_int8_matvec_same_bits_whatever_the_batch(isa, dtype):
    """What decoding a batch of sequences relies on (pr_decode_batch): each output of the few-rows kernel is
    bit for bit the same whether its activation row comes alone or with up to 7 others, whichever place it
    takes in the batch, and wherever its weight row falls in the kernels' 4-row passes or the threads' slices."""
    rng = np.random.default_rng(11)
    rows, cols = 45, 32 * 23  # q4_0: a whole superblock and a short one
    w = rng.normal(size=(rows, cols)).astype(np.float32)
    x = rng.normal(size=(8, cols)).astype(np.float32)
    raw = np.ascontiguousarray(_core.quantize(w, dtype).reshape(rows, -1))
    alone = np.stack([_core.matmul(raw, dtype, cols, x[i:i + 1], isa=isa)[0] for i in range(8)])
    for n in (2, 3, 5, 8):
        for start in (0, 8 - n):
            got = _core.matmul(raw, dtype, cols, x[start:start + n], isa=isa, threads=2)
            assert np.array_equal(got, alone[start:start + n]), (n, start)
    for r0 in (1, 2, 3):  # weight rows shifted against the 4-row passes
        assert np.array_equal(_core.matmul(raw[r0:], dtype, cols, x[:3], isa=isa, threads=1), alone[:3, r0:])


def q4_0_superblocks_by_hand(raw):
    """kernels/quant.h's in-memory q4_0 layout built in numpy from the file's bytes: each run of up to 16 blocks
    (the last one: count mod 16) becomes their m f16 scales, then 4 chunks of 4·m bytes, chunk k holding bytes
    4k..4k+3 of each block's 16 nibble bytes in block order."""
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, 18)
    out = []
    for s0 in range(0, blocks.shape[1], 16):
        sb = blocks[:, s0:s0 + 16]  # [rows, m, 18]
        m = sb.shape[1]
        scales = sb[:, :, :2].reshape(rows, 2 * m)
        chunks = sb[:, :, 2:].reshape(rows, m, 4, 4).transpose(0, 2, 1, 3).reshape(rows, 16 * m)
        out += [scales, chunks]
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("nb", [1, 3, 4, 5, 8, 11, 16, 17, 28, 88])
def test_q4_0_superblocks_layout(nb):
    """The load-time layout of q4_0 rows is the documented byte layout, and every reader of it (the
    reference dequantiser; every table's kernels via the tests above) gets the file's values back."""
    rng = np.random.default_rng(nb)
    w = rng.normal(size=(5, nb * 32)).astype(np.float32)
    raw = np.ascontiguousarray(_core.quantize(w, "q4_0").reshape(5, -1))
    assert np.array_equal(_core.q4_0_superblocks(raw, nb * 32), q4_0_superblocks_by_hand(raw))
    assert np.array_equal(_core.dequantize(raw, "q4_0", nb * 32), dequantize_by_hand(raw, "q4_0").astype(np.float32))


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_quantizer_is_ggml_format(dtype):
    """Byte-exact with the gguf package's (ggml's) reference quantiser, including an all-zero block."""
    from gguf import GGMLQuantizationType, quants

    rng = np.random.default_rng(3)
    x = (rng.standard_t(3, size=(9, 160)) * np.exp(rng.normal(size=(9, 1)))).astype(np.float32)
    x[0, :32] = 0
    x[1, 32:64] = 1e-8
    want = quants.quantize(x, getattr(GGMLQuantizationType, dtype.upper()))
    assert np.array_equal(_core.quantize(x, dtype), want)


def test_quantize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quantize(np.zeros((2, 33), np.float32), "q8_0")
    with pytest.raises(ValueError, match="q8_0 or q4_0"):
        _core.quantize(np.zeros((2, 32), np.float32), "bf16")
    with pytest.raises(ValueError, match="unknown dtype"):
        _core.matmul(np.zeros((1, 4), np.uint8), "q5_1", 32, np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError, match="is 34 bytes"):
        _core.matmul(np.zeros((1, 4), np.uint8), "q8_0", 32, np.zeros((1, 32), np.float32))


@pytest.mark.parametrize("isa", SIMD)
def test_activation_quantizer_same_bytes(isa):
    rng = np.random.default_rng(8)
    x = rng.normal(size=32 * 41).astype(np.float32)
    x[:32] = 0
    x[32:64] = np.round(rng.normal(size=32) * 4) / 2  # exact halves: ties must round the same way
    assert np.array_equal(_core.quantize_act(x, isa), _core.quantize_act(x, "scalar"))


@pytest.mark.parametrize("isa", ISAS)
def test_elementwise(isa):
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=1001) * 6, [0.0, -100.0, 100.0, -88.0, 88.0]]).astype(np.float32)
    u = rng.normal(size=x.size).astype(np.float32)
    xd = x.astype(np.float64)
    sig = lambda t: 1 / (1 + np.exp(-t))
    # f32 evaluation of exp, one division and one product: a few ulp of the result (plus a tiny absolute
    # slack where the result underflows)
    y, _ = _core.elementwise("silu_mul", x, isa, u)
    want = xd * sig(xd) * u
    assert np.allclose(y, want, rtol=8 * EPS * 4, atol=1e-30)
    y, _ = _core.elementwise("quick_gelu", x, isa)
    # the exponent 1.702·x is an f32 product, as in the kernels' definition; exp amplifies its rounding
    want = xd * sig((np.float32(1.702) * x).astype(np.float64))
    assert np.allclose(y, want, rtol=8 * EPS * 4, atol=1e-30)
    s = rng.normal(size=517).astype(np.float32) * 10
    y, total = _core.elementwise("exp_sum", s, isa, None, float(s.max()))
    want = np.exp((s - s.max()).astype(np.float64))  # x − m is an f32 difference, as in the kernels
    assert np.allclose(y, want, rtol=16 * EPS, atol=1e-37)
    assert abs(total - want.sum()) <= 517 * 2 * EPS * want.sum()


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_erf(isa):
    """The projector's exact GELU 0.5x·(1 + erf(x/√2)) against float64 (math.erfc, which has no cancellation).
    Scalar table: the definition in f32 (libm erff, 1 ulp of a value ≤ 1, then 1 + erf, ×0.5x): absolute error
    ≤ u·|x| plus a few roundings of the result, large relative error where 1 + erf cancels (x < −3). SIMD tables:
    0.5x·(2 − erfc(z)) or 0.5x·erfc(z), z = |x|/√2, erfc(z) = t·exp(P(t) − z²) (kernels.h): relative error
    ≤ 1.2e−7 (the formula's) + the exponent's absolute error (z rounded twice: 4u·z², P(t) − z² once:
    u·(z² + 1.3), Horner's 9 FMAs at values ≤ 1.3) + exp's 2 ulp, t's and the products' roundings: u·(16 + 5z²)
    in all; exp flushes results below ~1e−38 to 0."""
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.normal(size=20000) * 3, np.linspace(-14, 14, 20001), [0.0, -0.0, 1e-20, -1e-20]])
    x = x.astype(np.float32)
    y, _ = _core.elementwise("gelu", x, isa)
    import math
    xd = x.astype(np.float64)
    want = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in xd])
    if isa == "scalar":
        tol = EPS * (2 * np.abs(xd) + 8 * np.abs(want)) + 1e-37
    else:
        tol = (1.2e-7 + EPS * (16 + 5 * xd * xd / 2)) * np.abs(want) + 1e-37
    assert (np.abs(y - want) <= tol).all(), x[np.argmax(np.abs(y - want) / tol)]


@pytest.mark.parametrize("isa", ISAS)
def test_half_conversions(isa):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=301) * 100, [0.0, -0.0, 1e-7, 6e-5, 65504.0, 70000.0, np.inf, -np.inf],
                        rng.normal(size=9) * 1e-6]).astype(np.float32)
    y, _ = _core.elementwise("f16", x, isa)
    with np.errstate(over="ignore"):  # 70000 → inf is the point
        assert np.array_equal(y, x.astype(np.float16).astype(np.float32))
    y, _ = _core.elementwise("bf16", x, isa)
    import torch
    assert np.array_equal(y, torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def attention_ref(q, k, v, n_head, n_head_kv, causal):
    nq, d = q.shape
    hd, nkv = d // n_head, k.shape[0]
    out = np.zeros((nq, d))
    for h in range(n_head):
        g = h // (n_head // n_head_kv)
        Q, K, V = (q[:, h * hd:(h + 1) * hd].astype(np.float64), k[:, g * hd:(g + 1) * hd].astype(np.float64),
                   v[:, g * hd:(g + 1) * hd].astype(np.float64))
        s = Q @ K.T / np.sqrt(hd)
        if causal:
            s = np.where(np.arange(nkv)[None, :] <= (nkv - nq + np.arange(nq))[:, None], s, -np.inf)
        p = np.exp(s - s.max(1, keepdims=True))
        out[:, h * hd:(h + 1) * hd] = (p / p.sum(1, keepdims=True)) @ V
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nq,nkv,n_head,n_head_kv,hd,causal", [
    (1, 1, 2, 1, 8, True),          # first decode step
    (1, 300, 4, 2, 24, True),       # decode over more than one key tile, GQA
    (67, 300, 3, 3, 20, True),      # prefill after a cached prefix
    (300, 1400, 2, 1, 16, True),    # two query blocks (192 + 108 scalar, 288 + 12 AVX2) after a prefix, two key tiles
    (700, 760, 2, 1, 8, True),      # two query blocks on every table (672 + 28 AVX-512)
    (150, 150, 2, 1, 64, True),     # prefill from empty
    (91, 91, 3, 3, 16, False),      # vision tower: bidirectional
    (70, 333, 2, 2, 8, False),
    (3, 1100, 2, 1, 16, True),      # decode past one 1024-key tile: the running max and sum carry over
    (40, 1200, 2, 2, 8, False),
])
@pytest.mark.parametrize("kv_f16", [False, True])
def test_attention_matches_reference(isa, nq, nkv, n_head, n_head_kv, hd, causal, kv_f16):
    rng = np.random.default_rng(nq + nkv)
    q = (rng.normal(size=(nq, n_head * hd)) * 2).astype(np.float32)
    k = (rng.normal(size=(nkv, n_head_kv * hd))).astype(np.float32)
    v = rng.normal(size=(nkv, n_head_kv * hd)).astype(np.float32)
    got = _core.attention(q, k, v, n_head, n_head_kv, causal, kv_f16=kv_f16, isa=isa, threads=2)
    if kv_f16:  # the reference sees the same f16-rounded cache
        k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    want = attention_ref(q, k, v, n_head, n_head_kv, causal)
    # f32 accumulation of ≤ 333 terms of size ≤ max|v| (softmax weights sum to 1), plus exp's few ulp
    assert np.abs(got - want).max() <= 1e-5 * np.abs(v).max()


def gamma(m):
    """Higham's bound for an m-term f32 sum of products in any order (FMA or not): |error| ≤ γ_m·Σ|terms|."""
    return m * EPS / (1 - m * EPS)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("hd,ld", [(64, 64), (64, 1024), (128, 136), (24, 40), (80, 80), (7, 9)])
def test_decode_attention_kernels_match_float64(isa, hd, ld):
    """attn_scores_f16 / attn_values_f16 (one query head against n cached f16 rows, ld values apart) against
    numpy in float64, for n = 1, odd, around the kernels' blocks of 4 and 8 keys and 2 rows, and long. Bounds:
    a score is an hd-term sum then one rounding by the scale, (γ_hd + ε)·scale·Σ|k_i q_i|; an output column an
    n-term sum, γ_n·Σ_t |p_t v_ti| (f16 → f32 is exact, so these are the only roundings)."""
    rng = np.random.default_rng(hd * 1000 + ld)
    scale = np.float32(1 / np.sqrt(hd))
    q = (rng.normal(size=hd) * 2).astype(np.float32)
    K = rng.normal(size=(3000, ld)).astype(np.float16)
    V = rng.normal(size=(3000, ld)).astype(np.float16)
    P = rng.uniform(0, 1, 3000).astype(np.float32)
    s_long = None
    for n in (3000, 1, 2, 3, 5, 8, 9, 17, 67, 333, 1100):
        s, o = _core.attn_f16(q, K[:n].view(np.uint16), V[:n].view(np.uint16), P[:n], scale, isa)
        k64, v64, p64 = K[:n, :hd].astype(np.float64), V[:n, :hd].astype(np.float64), P[:n].astype(np.float64)
        terms = np.abs(k64 * q.astype(np.float64)).sum(1)
        assert np.all(np.abs(s - float(scale) * (k64 @ q)) <= (gamma(hd) + EPS) * float(scale) * terms + 1e-30), n
        assert np.all(np.abs(o - p64 @ v64) <= gamma(n) * (np.abs(p64) @ np.abs(v64)) + 1e-30), n
        # a key's score depends on hd alone: the same bits whatever n and its place in a block of keys
        if s_long is None:
            s_long = s
        assert np.array_equal(s, s_long[:n]), n


@pytest.mark.parametrize("isa", ISAS)
def test_attention_query_rows_do_not_depend_on_the_others(isa):
    """Bidirectional attention (the vision tower's): a query's output is the same bits whether it sits in a full
    strip of MR queries or in the last, partial one (the micro-kernel for fewer rows sums as the full one does)."""
    rng = np.random.default_rng(29)
    nq, nkv, n_head, hd = 61, 90, 2, 40
    q = rng.normal(size=(nq, n_head * hd)).astype(np.float32)
    k, v = (rng.normal(size=(nkv, n_head * hd)).astype(np.float32) for _ in range(2))
    full = _core.attention(q, k, v, n_head, n_head, False, isa=isa, threads=2)
    for m in (9, 10, 11, 13, 15, 47, 57):  # past the few-query path (≤ 4); remainders of the 4-, 6-, 14-row strips
        assert np.array_equal(_core.attention(q[:m], k, v, n_head, n_head, False, isa=isa, threads=2), full[:m]), m


def run_with_isa(isa, code):
    env = dict(os.environ, PARROT_ISA=isa)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_parrot_isa_override(tmp_path):
    some_file = tmp_path / "some.gguf"  # exists, so the error can only be the ISA's
    some_file.write_bytes(b"GGUF" + bytes(60))
    r = run_with_isa("scalar", "from parrot import _core; print(_core.kernel_isa())")
    assert r.returncode == 0 and r.stdout.strip() == "scalar", r.stderr
    missing = [i for i in ("avx512", "neon", "avx2") if i not in ISAS]
    for isa in missing + ["sse9"]:
        r = run_with_isa(isa, "from parrot import _core; _core.kernel_isa()")
        assert r.returncode != 0 and "PARROT_ISA" in r.stderr and isa in r.stderr, r.stderr
        assert re.search("available( here)?: scalar", r.stderr), r.stderr
        r = run_with_isa(isa, f"import parrot\ntry:\n parrot.load({str(some_file)!r})\nexcept ValueError as e: print(e)")
        assert "PARROT_ISA" in r.stdout and isa in r.stdout, r.stdout + r.stderr


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_FILES = ["csrc/kernels/kernels_scalar.c", "csrc/kernels/quant.c"]


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu "
                           "libc6-dev-arm64-cross qemu-user)")
def test_neon_table_under_qemu(tmp_path):
    """The NEON table against the scalar one, cross-compiled and run under qemu (tests/c/kernels_check.c)."""
    exe = str(tmp_path / "check")
    subprocess.run(["aarch64-linux-gnu-gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                    "-static", "-Icsrc", "tests/c/kernels_check.c", *KERNEL_FILES, "csrc/kernels/kernels_neon.c",
                    "-DTABLE=pr_kernels_neon", "-lm", "-o", exe], cwd=ROOT, check=True)
    r = subprocess.run(["qemu-aarch64", exe], capture_output=True, text=True)
    assert r.returncode == 0 and "neon: 0 failures" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(not os.path.exists("/usr/include/simde/x86/avx512.h"),
                    reason="needs SIMDe (apt-get install libsimde-dev) to emulate AVX-512 on any x86 CPU")
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 only")
def test_avx512_bf16_vnni_table_emulated(tmp_path):
    """The AVX-512 + BF16 + VNNI table (what AVX-512 CI machines run) against the scalar one on every x86 CPU:
    kernels_avx512.c compiled against SIMDe's portable intrinsics (PR_EMULATE_AVX512, see setup.py)."""
    exe = str(tmp_path / "check")
    subprocess.run(["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-psabi", "-Werror",
                    "-mavx2", "-mfma", "-mf16c", "-DPR_EMULATE_AVX512", "-Icsrc", "tests/c/kernels_check.c",
                    *KERNEL_FILES, "csrc/kernels/kernels_avx512.c", "csrc/kernels/kernels_avx2.c",
                    "-DTABLE=pr_kernels_avx512_bf16", "-lm",
                    "-o", exe], cwd=ROOT, check=True)
    r = subprocess.run([exe], capture_output=True, text=True)
    assert r.returncode == 0 and "avx512: 0 failures" in r.stdout, r.stdout + r.stderr
