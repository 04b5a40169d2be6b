"""Image decoding and CLIP preprocessing against Pillow and transformers' PIL CLIPImageProcessor.

Every image is made here (numpy → Pillow / a hand-written PNG encoder / a small libjpeg writer compiled on the
fly for the JPEG colour spaces Pillow cannot write). The C decoder and resampler reproduce Pillow's arithmetic,
so all comparisons are exact equality (stricter than the ±1 level the issue allows): the JPEG decoders agree
bit for bit because both run libjpeg-turbo's default islow IDCT and fancy upsampling, whose SIMD and C paths
are bit-exact by design.
"""
from __future__ import annotations

import io
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from parrot import _core
from parrot import image as pimg
from parrot.errors import ImageError

RNG = np.random.default_rng(1234)
MEAN = pimg.CLIP_MEAN
STD = pimg.CLIP_STD


# ------------------------------------------------------------------ helpers
def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Noise over a smooth gradient with a few hard edges: exercises clipping and the filter's lobes."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    noise = r.integers(-40, 41, (h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    img[(x // 7 + y // 5) % 9 == 0] = 255
    img[(x // 3 + y // 11) % 13 == 0] = 0
    return img


test_image.__test__ = False  # a helper, not a test


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _pack_rows(samples: np.ndarray, depth: int) -> np.ndarray:
    h = samples.shape[0]
    if depth == 16:
        return samples.astype(">u2").view(np.uint8).reshape(h, -1)
    if depth == 8:
        return samples.astype(np.uint8)
    per = 8 // depth
    pad = (-samples.shape[1]) % per
    s = np.concatenate([samples, np.zeros((h, pad), samples.dtype)], 1).astype(np.uint8).reshape(h, -1, per)
    out = np.zeros(s.shape[:2], np.uint8)
    for i in range(per):
        out |= (s[:, :, i] << (8 - depth * (i + 1))).astype(np.uint8)
    return out


def write_png(samples: np.ndarray, color_type: int, depth: int, interlace: bool = False, plte=None,
              trns: bytes | None = None, width: int | None = None, height: int | None = None) -> bytes:
    """A PNG of any colour type / bit depth / interlacing (Pillow cannot write most of them)."""
    h, w = samples.shape[:2]
    s = samples.reshape(h, w, -1)
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = s[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows = _pack_rows(sub.reshape(sub.shape[0], -1), depth)
        raw += b"".join(b"\0" + r.tobytes() for r in rows)
    ihdr = struct.pack(">IIBBBBB", width if width is not None else w, height if height is not None else h, depth,
                       color_type, 0, 0, int(interlace))
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).ravel()))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


JPEG_WRITER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
/* kind w h raw_in jpeg_out progressive: JPEG colour spaces Pillow cannot write */
int main(int argc, char **argv) {
    if (argc != 7) return 2;
    const char *kind = argv[1];
    int w = atoi(argv[2]), h = atoi(argv[3]), comps = strcmp(kind, "rgb") == 0 ? 3 : 4;
    FILE *in = fopen(argv[4], "rb"), *out = fopen(argv[5], "wb");
    if (!in || !out) return 3;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, out);
    c.image_width = w; c.image_height = h; c.input_components = comps;
    c.in_color_space = comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    if (!strcmp(kind, "rgb")) jpeg_set_colorspace(&c, JCS_RGB);
    else if (!strcmp(kind, "ycck")) jpeg_set_colorspace(&c, JCS_YCCK);
    else { jpeg_set_colorspace(&c, JCS_CMYK); if (!strcmp(kind, "cmyk_noadobe")) c.write_Adobe_marker = FALSE; }
    jpeg_set_quality(&c, 90, TRUE);
    if (atoi(argv[6])) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)w * comps);
    while (c.next_scanline < c.image_height) {
        if (fread(row, 1, (size_t)w * comps, in) != (size_t)w * comps) return 4;
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(out);
    free(row);
    return 0;
}
"""


@pytest.fixture(scope="module")
def jpeg_writer(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the libjpeg test writer")
    d = tmp_path_factory.mktemp("jw")
    src, exe = d / "jw.c", d / "jw"
    src.write_text(JPEG_WRITER_C)
    r = subprocess.run([cc, "-O1", "-o", str(exe), str(src), "-ljpeg"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the libjpeg test writer: {r.stderr[:200]}")

    def write(kind: str, samples: np.ndarray, progressive: bool = False) -> bytes:
        h, w = samples.shape[:2]
        raw, out = d / "raw.bin", d / "out.jpg"
        np.ascontiguousarray(samples, np.uint8).tofile(raw)
        subprocess.check_call([str(exe), kind, str(w), str(h), str(raw), str(out), str(int(progressive))])
        return out.read_bytes()

    return write


# ------------------------------------------------------------------ decoding parity with Pillow
PNG_CASES = [(ct, bd) for ct, depths in [(0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)), (4, (8, 16)),
                                         (6, (8, 16))] for bd in depths]


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("ct,bd", PNG_CASES)
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (33, 17)])
def test_png_matches_pillow(ct, bd, interlace, size):
    h, w = size
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ct]
    hi = 2 ** bd
    samples = RNG.integers(0, hi, (h, w, channels))
    if ct == 0 and bd == 16:  # values around 255 show Pillow's I;16 → RGB saturation
        samples[..., 0] = RNG.choice([0, 1, 200, 255, 256, 257, 4000, 65535], (h, w))
    plte = RNG.integers(0, 256, (min(hi, 256), 3)) if ct == 3 else None
    data = write_png(samples, ct, bd, interlace, plte=plte)
    assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


@pytest.mark.parametrize("ct,bd,trns", [
    (3, 8, bytes([0] + [255] * 10)),                # one transparent entry (Pillow: info["transparency"])
    (3, 4, bytes(range(0, 160, 10))),               # an alpha per entry (Pillow warns, converts by palette)
    (3, 2, b"\x80"),
    (0, 8, struct.pack(">H", 7)),                   # grey with a transparent value
    (0, 1, struct.pack(">H", 1)),
    (0, 16, struct.pack(">H", 300)),
    (2, 8, struct.pack(">HHH", 1, 2, 3)),           # RGB with a transparent colour
    (2, 16, struct.pack(">HHH", 1, 2, 3)),
])
def test_png_trns_is_ignored_like_pillow(ct, bd, trns):
    channels = 3 if ct == 2 else 1
    samples = RNG.integers(0, 2 ** bd, (9, 11, channels))
    plte = RNG.integers(0, 256, (2 ** min(bd, 8), 3)) if ct == 3 else None
    data = write_png(samples, ct, bd, plte=plte, trns=trns)
    assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


def test_png_palette_index_beyond_plte_is_black_like_pillow():
    data = write_png(np.array([[0, 1, 2, 200]]), 3, 8, plte=[[10, 20, 30], [40, 50, 60]])
    ours = _core.decode_image(data, None)
    assert np.array_equal(ours, pil_rgb(data))
    assert ours[0, 3].tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_pillow_written_png(mode):
    a = test_image(29, 41, seed=3)
    if mode == "I;16":
        im = Image.fromarray((a[..., 0].astype(np.uint16) * 257))
    else:
        im = Image.fromarray(a).convert(mode)
    for kw in ({}, {"optimize": True}):
        data = encode(im, "PNG", **kw)
        assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("opts", [{}, {"progressive": True}, {"subsampling": 0}, {"subsampling": 1},
                                  {"quality": 40, "optimize": True}, {"quality": 100}])
@pytest.mark.parametrize("size", [(1, 1), (17, 23), (64, 48), (101, 77)])
def test_jpeg_matches_pillow(mode, opts, size):
    h, w = size
    im = Image.fromarray(test_image(h, w, seed=h * w)).convert(mode)
    data = encode(im, "JPEG", **opts)
    assert Image.open(io.BytesIO(data)).mode == mode
    assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


@pytest.mark.parametrize("kind", ["ycck", "cmyk", "cmyk_noadobe", "rgb"])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_colour_spaces_match_pillow(jpeg_writer, kind, progressive):
    comps = 3 if kind == "rgb" else 4
    samples = RNG.integers(0, 256, (27, 35, comps), dtype=np.uint8)
    samples[:9] = 255  # stored K = 255 (Adobe-inverted "no ink") and saturated channels
    data = jpeg_writer(kind, samples, progressive)
    assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


def test_large_jpeg_matches_pillow():
    data = encode(Image.fromarray(test_image(1200, 1600, seed=5)), "JPEG", quality=85)
    assert np.array_equal(_core.decode_image(data, None), pil_rgb(data))


# ------------------------------------------------------------------ every input type gives the same pixels
def test_all_input_types_agree(tmp_path):
    a = test_image(45, 67, seed=9)
    png = encode(Image.fromarray(a), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(png)
    rgba = np.concatenate([a, RNG.integers(0, 256, (45, 67, 1), dtype=np.uint8)], 2)
    inputs = [str(path), path, png, bytearray(png), memoryview(png), a, rgba, Image.open(io.BytesIO(png)),
              Image.fromarray(rgba)]
    outs = [pimg.load_image(x) for x in inputs]
    for o in outs:
        assert o.dtype == np.uint8 and o.shape == (45, 67, 3) and o.flags.c_contiguous
        assert np.array_equal(o, a)
    pre = [pimg.preprocess(x) for x in inputs]
    for p in pre:
        assert np.array_equal(p, pre[0])
    # load_image returns a fresh array, never the caller's
    out = pimg.load_image(a)
    out[0, 0] = 1 + out[0, 0]
    assert not np.array_equal(out, a)


def test_grey_and_rgba_arrays_follow_pil():
    g = test_image(20, 30)[..., 0]
    assert np.array_equal(pimg.load_image(g), np.asarray(Image.fromarray(g).convert("RGB")))
    assert np.array_equal(pimg.load_image(g[..., None]), np.asarray(Image.fromarray(g).convert("RGB")))
    rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    assert np.array_equal(pimg.load_image(rgba), np.asarray(Image.fromarray(rgba).convert("RGB")))
    pil_la = Image.fromarray(np.stack([g, g[::-1]], -1), "LA")
    assert np.array_equal(pimg.load_image(pil_la), np.asarray(pil_la.convert("RGB")))


def test_non_contiguous_array():
    a = test_image(50, 60)
    view = a[::2, ::3]
    assert np.array_equal(pimg.load_image(view), np.ascontiguousarray(view))
    assert np.array_equal(pimg.preprocess(view, size=32), pimg.preprocess(np.ascontiguousarray(view), size=32))


def test_threads_decode_concurrently():
    datas = [encode(Image.fromarray(test_image(300, 200 + i, seed=i)), "JPEG") for i in range(6)]
    want = [pil_rgb(d) for d in datas]
    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda d: pimg.preprocess(d), datas * 2))
    for i, g in enumerate(got):
        assert np.array_equal(g, pimg.preprocess(want[i % 6]))


# ------------------------------------------------------------------ resize and preprocess parity
def expand2square(im: Image.Image, bg: tuple[int, int, int]) -> Image.Image:
    """LLaVA/Parrot's pad step, verbatim in behaviour."""
    w, h = im.size
    if w == h:
        return im
    s = max(w, h)
    out = Image.new(im.mode, (s, s), bg)
    out.paste(im, ((s - w) // 2, (s - h) // 2))
    return out


def spec_pixels(a: np.ndarray, size: int, mean=MEAN) -> np.ndarray:
    """docs/model.md §1 with Pillow: pad, resize((S, S), BICUBIC, reducing_gap=None)."""
    bg = tuple(int(m * 255) for m in mean)
    sq = expand2square(Image.fromarray(a), bg)
    return np.asarray(sq.resize((size, size), Image.BICUBIC, reducing_gap=None))


def spec_normalise(px: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    x = (px.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def clip_processor(size: int):
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "CLIPImageProcessorPil", None)
    if cls is None:  # older transformers: the slow class is CLIPImageProcessor itself
        cls = transformers.CLIPImageProcessor
        kw = {"use_fast": False}
    else:
        kw = {}
    try:
        return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **kw)
    except TypeError:
        return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


SIZES = [(1, 1), (1, 1000), (1000, 1), (336, 337), (337, 336), (336, 336), (335, 335), (2, 3), (13, 7),
         (900, 200), (200, 900), (480, 640), (1080, 1920), (50, 5000)]


@pytest.mark.parametrize("hw", SIZES)
def test_preprocess_matches_spec_with_pillow(hw):
    h, w = hw
    a = test_image(h, w, seed=h + 7 * w)
    px = pimg.clip_pixels(a, size=336)
    ref = spec_pixels(a, 336)
    assert np.array_equal(px, ref), f"max diff {np.abs(px.astype(int) - ref).max()}"
    assert np.array_equal(pimg.preprocess(a), spec_normalise(ref))


@pytest.mark.parametrize("hw", [(1, 1), (1, 1000), (337, 336), (200, 900), (900, 200), (640, 480)])
@pytest.mark.parametrize("size", [336, 224, 14])
def test_preprocess_matches_pil_clip_processor(hw, size):
    h, w = hw
    a = test_image(h, w, seed=h * 3 + w)
    proc = clip_processor(size)
    bg = tuple(int(m * 255) for m in proc.image_mean)
    sq = expand2square(Image.fromarray(a), bg)
    ref = np.asarray(proc.preprocess(sq, return_tensors="np")["pixel_values"][0])
    ours = pimg.preprocess(a, size=size, mean=proc.image_mean, std=proc.image_std)
    assert ours.shape == ref.shape == (3, size, size) and ours.dtype == ref.dtype == np.float32
    assert np.array_equal(ours, ref), f"max diff {np.abs(ours - ref).max()}"


@pytest.mark.parametrize("hw", [(300, 500), (500, 300), (337, 336), (1, 50), (77, 1234), (336, 1000)])
def test_unpadded_path_matches_pil_clip_processor(hw):
    h, w = hw
    a = test_image(h, w, seed=11)
    proc = clip_processor(224)
    ref = np.asarray(proc.preprocess(Image.fromarray(a), return_tensors="np")["pixel_values"][0])
    ours = pimg.preprocess(a, size=224, pad=False)
    assert np.array_equal(ours, ref), f"max diff {np.abs(ours - ref).max()}"


def test_6000x4000_matches_spec_and_processor():
    a = test_image(4000, 6000, seed=2)
    ref = spec_pixels(a, 336)
    assert np.array_equal(pimg.clip_pixels(a), ref)
    proc = clip_processor(336)
    sq = expand2square(Image.fromarray(a), tuple(int(m * 255) for m in MEAN))
    want = np.asarray(proc.preprocess(sq, return_tensors="np")["pixel_values"][0])
    assert np.array_equal(pimg.preprocess(a), want)


@pytest.mark.parametrize("src,dst", [((1, 1), (5, 3)), ((40, 30), (41, 31)), ((40, 30), (400, 17)),
                                     ((97, 61), (13, 11)), ((1000, 3), (7, 3)), ((3, 1000), (3, 999)),
                                     ((640, 480), (336, 252)), ((30, 40), (30, 90))])
def test_resize_bicubic_matches_pillow(src, dst):
    w, h = src
    a = test_image(h, w, seed=w * h)
    ref = np.asarray(Image.fromarray(a).resize(dst, Image.BICUBIC, reducing_gap=None))
    assert np.array_equal(pimg.resize_bicubic(a, *dst), ref)


def test_resize_pass_order_matches_pillow():
    """Pillow chooses which pass runs first from the geometry; random geometries pin the rule down."""
    r = np.random.default_rng(17)
    for _ in range(150):
        w, h = (int(v) for v in r.integers(1, 120, 2))
        ow, oh = (int(v) for v in r.integers(1, 160, 2))
        a = r.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(a).resize((ow, oh), Image.BICUBIC, reducing_gap=None))
        assert np.array_equal(pimg.resize_bicubic(a, ow, oh), ref), (w, h, ow, oh)


def test_pad_colour_and_custom_mean():
    a = np.zeros((10, 40, 3), np.uint8)
    px = pimg.clip_pixels(a, size=40, mean=(0.5, 0.0, 1.0))
    assert px[0, 0].tolist() == [127, 0, 255] and px[20, 20].tolist() == [0, 0, 0]
    assert np.array_equal(px, spec_pixels(a, 40, mean=(0.5, 0.0, 1.0)))
    px = pimg.clip_pixels(a, size=40)
    assert px[0, 0].tolist() == [122, 116, 104]


# ------------------------------------------------------------------ bad input
def assert_image_error(data, *needles, max_pixels=pimg.MAX_PIXELS):
    with pytest.raises(ImageError) as ei:
        pimg.load_image(data, max_pixels=max_pixels)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)


def test_empty_and_non_image(tmp_path):
    assert_image_error(b"", "<bytes>", "empty")
    assert_image_error(b"hello world, not an image", "<bytes>", "not a PNG or JPEG", "68 65 6c")
    gif = encode(Image.new("RGB", (4, 4)), "GIF")
    assert_image_error(gif[:20], "<bytes>", "cannot decode this GIF image with Pillow")  # a broken GIF
    p = tmp_path / "notes.txt"
    p.write_text("just text")
    assert_image_error(p, str(p), "not a PNG or JPEG")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_image_error(str(empty), str(empty), "empty")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        pimg.load_image(tmp_path / "nope.png")
    # a directory is not an image file: ImageError naming it, not a raw IsADirectoryError (issue 19)
    assert_image_error(tmp_path, str(tmp_path), "a directory")


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("PNG", {"interlace": True}), ("JPEG", {}),
                                    ("JPEG", {"progressive": True})])
def test_truncated_at_every_cut(fmt, kw):
    a = test_image(24, 30, seed=4)
    if kw.get("interlace"):
        data = write_png(a, 2, 8, interlace=True)
    else:
        data = encode(Image.fromarray(a), fmt, **kw)
    # PNG: the pixels are complete once the last IDAT chunk is read; a missing IEND is accepted, as by Pillow
    end = data.rindex(b"IEND") - 4 if fmt == "PNG" else len(data)
    for cut in range(end):
        with pytest.raises(ImageError) as ei:
            _core.decode_image(data[:cut], None)
        msg = str(ei.value)
        assert msg.startswith("<bytes>: ")
        assert any(s in msg for s in ("empty", "not a PNG or JPEG", "truncated")), msg
    for cut in range(end, len(data) + 1):
        assert np.array_equal(_core.decode_image(data[:cut], None), pil_rgb(data))


def test_truncated_file_names_the_path(tmp_path):
    data = encode(Image.fromarray(test_image(20, 20)), "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    assert_image_error(p, str(p), "truncated JPEG")


def test_corrupt_png():
    data = bytearray(write_png(test_image(16, 16), 2, 8))
    bad_crc = bytearray(data)
    bad_crc[20] ^= 0xFF  # inside IHDR: CRC mismatch
    assert_image_error(bytes(bad_crc), "<bytes>", "corrupt", "CRC")
    i = data.index(b"IDAT") + 10
    bad_idat = bytearray(data)
    bad_idat[i] ^= 0x55
    assert_image_error(bytes(bad_idat), "corrupt")
    # valid chunks, but a zlib stream that is garbage
    bad_zlib = write_png(np.zeros((4, 4, 3), np.uint8), 2, 8)
    j = bad_zlib.index(b"IDAT")
    n = struct.unpack(">I", bad_zlib[j - 4:j])[0]
    junk = bytes(range(n))
    bad_zlib = bad_zlib[:j - 4] + png_chunk(b"IDAT", junk) + png_chunk(b"IEND", b"")
    assert_image_error(bad_zlib, "corrupt")
    # an invalid colour type / depth pair
    assert_image_error(write_png(np.zeros((2, 2)), 3, 16, plte=[[0, 0, 0]]), "corrupt")


def test_corrupt_jpeg():
    data = encode(Image.fromarray(test_image(32, 32)), "JPEG")
    sof = data.index(b"\xff\xc0")
    twelve_bit = data[:sof + 4] + bytes([12]) + data[sof + 5:]
    assert_image_error(twelve_bit, "<bytes>", "unsupported JPEG", "precision 12")
    no_dqt = data.replace(b"\xff\xdb", b"\xff\xfe")  # quantisation tables turned into comments
    assert_image_error(no_dqt, "corrupt", "Quantization table")
    no_sos = data[:data.index(b"\xff\xda")] + b"\xff\xd9"
    assert_image_error(no_sos, "corrupt", "SOS")
    for bad in (twelve_bit, no_dqt, no_sos):  # Pillow refuses them too
        with pytest.raises(Exception):
            pil_rgb(bad)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_random_corruption_never_crashes(fmt):
    a = test_image(40, 48, seed=8)
    data = encode(Image.fromarray(a), fmt)
    r = np.random.default_rng(99)
    for _ in range(300):
        mutated = bytearray(data)
        for pos in r.integers(0, len(data), r.integers(1, 6)):
            mutated[pos] = r.integers(0, 256)
        try:
            out = _core.decode_image(bytes(mutated), None)
        except ImageError as e:
            assert str(e).startswith("<bytes>: ")
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_zero_dimensions():
    assert_image_error(write_png(np.zeros((2, 2)), 0, 8, width=0), "<bytes>", "zero size (0x2)")
    assert_image_error(write_png(np.zeros((2, 2)), 0, 8, height=0), "<bytes>", "zero size (2x0)")
    data = bytearray(encode(Image.fromarray(test_image(8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = b"\0\0"  # height 0
    assert_image_error(bytes(data), "<bytes>")
    with pytest.raises(ImageError, match="zero size"):
        pimg.load_image(np.zeros((0, 5, 3), np.uint8))


def test_absurd_dimensions_are_refused_before_allocating():
    # 100000 × 100000 declared, a few bytes of data: refused by the pixel limit, not by running out of memory
    msg = assert_image_error(write_png(np.zeros((2, 2)), 0, 8, width=100000, height=100000),
                             "100000x100000", "limit of 178956970 pixels")
    assert "<bytes>" in msg
    data = bytearray(encode(Image.fromarray(test_image(8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    assert_image_error(bytes(data), "65000x65000", "above the limit")
    # 2^31-1 wide: libpng's own limit is lifted, ours applies
    assert_image_error(write_png(np.zeros((1, 1)), 0, 8, width=2**31 - 1), "above the limit")


def test_pixel_limit_is_configurable(tmp_path):
    a = test_image(100, 100)
    png = encode(Image.fromarray(a), "PNG")
    jpg = encode(Image.fromarray(a), "JPEG")
    for src in (png, jpg, a, Image.fromarray(a)):
        assert_image_error(src, "10000 pixels", "limit of 9999", max_pixels=9999)
        assert pimg.load_image(src, max_pixels=10000).shape == (100, 100, 3)
        assert pimg.load_image(src, max_pixels=None).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="above the limit"):
        pimg.preprocess(png, max_pixels=50)
    with pytest.raises(ValueError, match="max_pixels"):
        pimg.load_image(png, max_pixels=0)


def test_bad_python_arguments():
    with pytest.raises(TypeError, match="int"):
        pimg.load_image(12)
    with pytest.raises(TypeError, match="list"):
        pimg.load_image([[1, 2, 3]])
    with pytest.raises(TypeError, match="float64"):
        pimg.load_image(np.zeros((4, 4, 3)))
    with pytest.raises(ImageError, match="shape"):
        pimg.load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        pimg.load_image(np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match="size"):
        pimg.preprocess(np.zeros((4, 4, 3), np.uint8), size=0)
    with pytest.raises(ValueError, match="3 values"):
        pimg.preprocess(np.zeros((4, 4, 3), np.uint8), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        pimg.preprocess(np.zeros((4, 4, 3), np.uint8), std=(0.5, 0.0, 0.5))


# ------------------------------------------------------------------ issue 15: extreme aspect ratios, real photos
def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like image: smooth low-frequency shading, soft-edged blobs and sensor-like noise, saved and
    reloaded as a JPEG so it carries real JPEG artefacts (8×8 blocks, ringing, chroma subsampling)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fx, fy, ph = r.uniform(0.5, 6, 2).tolist() + [r.uniform(0, 6.3)]
            img[..., c] += r.uniform(20, 60) * np.sin(2 * np.pi * (fx * x + fy * y) + ph)
    for _ in range(6):
        cy, cx, rad = r.uniform(0, 1), r.uniform(0, 1), r.uniform(0.05, 0.3)
        img += (np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / rad ** 2)[..., None] * r.uniform(-90, 90, 3))
    img = np.clip(img + 128 + r.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return pil_rgb(encode(Image.fromarray(img), "JPEG", quality=85))


def real_photos() -> list[np.ndarray]:
    """Photographs shipped by test dependencies (matplotlib's sample data: Grace Hopper's portrait)."""
    out = []
    try:
        import matplotlib
        p = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if p.exists():
            out.append(pil_rgb(p.read_bytes()))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("hw", [(1, 2), (2, 1), (1, 4000), (4000, 1), (2, 3001), (3001, 2), (3, 2500),
                                (2500, 24), (1, 337), (1, 335), (5, 336), (336, 5), (336, 4000)])
def test_extreme_aspect_ratios_match_pillow(hw):
    """The padded resample without the square canvas equals Pillow's pad-then-resize bit for bit."""
    h, w = hw
    a = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for size in (336, 14, 500):
        assert np.array_equal(pimg.clip_pixels(a, size=size), spec_pixels(a, size)), (h, w, size)


def test_real_and_photo_like_images_match_pillow():
    photos = real_photos() + [photo_like(480, 640, 1), photo_like(1200, 900, 2), photo_like(97, 2000, 3)]
    assert len(photos) >= 3
    for p in photos:
        h, w = p.shape[:2]
        # the photo, and strips of it as extreme aspect ratios (1, 2 and 3 pixels thick, both ways)
        for a in (p, p[:1], p[:, :1], p[:2], p[:, :2], p[h // 2:h // 2 + 3], p[:, w // 3:w // 3 + 3]):
            a = np.ascontiguousarray(a)
            assert np.array_equal(pimg.clip_pixels(a), spec_pixels(a, 336)), a.shape
            assert np.array_equal(pimg.preprocess(a), spec_normalise(spec_pixels(a, 336))), a.shape
        # unpadded (the CLIP processor's own path), vs Pillow's resize + centre crop
        s = min(h, w)
        nw, nh = (336, int(336 * h / w)) if w <= h else (int(336 * w / h), 336)
        ref = np.asarray(Image.fromarray(p).resize((nw, nh), Image.BICUBIC, reducing_gap=None))
        top, left = (nh - 336) // 2, (nw - 336) // 2
        assert s >= 1 and np.array_equal(pimg.clip_pixels(p, pad=False), ref[top:top + 336, left:left + 336])


def test_cmyk_strip_matches_pillow():
    data = encode(Image.fromarray(photo_like(24, 1500, 4)).convert("CMYK"), "JPEG")
    a = pil_rgb(data)
    assert np.array_equal(pimg.load_image(data), a)
    assert np.array_equal(pimg.clip_pixels(data), spec_pixels(a, 336))


# ------------------------------------------------------------------ issue 19: EXIF orientation, other formats
def with_orientation(a: np.ndarray, fmt: str, orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    kw = {"quality": 95} if fmt == "JPEG" else {}
    return encode(Image.fromarray(a), fmt, exif=ex.tobytes(), **kw)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path, fmt, orientation):
    from PIL import ImageOps
    a = test_image(6, 11, seed=orientation)
    data = with_orientation(a, fmt, orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    stored = pil_rgb(data)
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    path.write_bytes(data)
    for src in (data, path, str(path)):
        assert np.array_equal(pimg.load_image(src), upright)           # applied by default
        assert np.array_equal(pimg.load_image(src, exif=False), stored)  # and can be turned off
    assert np.array_equal(pimg.preprocess(data), spec_normalise(spec_pixels(upright, 336)))
    assert np.array_equal(pimg.preprocess(data, exif=False), spec_normalise(spec_pixels(stored, 336)))


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP", "BMP"])
def test_other_formats_go_through_pillow(tmp_path, fmt):
    a = test_image(9, 14, seed=5)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(Image.fromarray(a), fmt, **kw)
    want = pil_rgb(data)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    for src in (data, path):
        assert np.array_equal(pimg.load_image(src), want)
    assert np.array_equal(pimg.preprocess(path), spec_normalise(spec_pixels(want, 336)))
    with pytest.raises(ImageError, match="above the limit of 10 pixels"):
        pimg.load_image(data, max_pixels=10)


def test_other_formats_without_pillow_say_how(tmp_path):
    gif = tmp_path / "x.gif"
    gif.write_bytes(encode(Image.new("RGB", (3, 3)), "GIF"))
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from parrot import image\n"
            "try:\n    image.load_image(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    p = subprocess.run([sys.executable, "-c", code, str(gif)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1])))
    assert p.stdout.startswith("ImageError") and str(gif) in p.stdout and "pip install pillow" in p.stdout, \
        p.stdout + p.stderr
