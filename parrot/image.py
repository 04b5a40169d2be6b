"""Images in: decoding to RGB and Parrot's CLIP preprocessing, exact to Pillow.

``load_image`` turns a path, encoded bytes, a NumPy array or a PIL image into an H×W×3 uint8 RGB array — for
files, the pixels Pillow's ``Image.open(f).convert('RGB')`` gives (PNG and JPEG are decoded in C with libpng and
libjpeg; GIF, TIFF, WebP and BMP through Pillow when it is installed), turned upright by their EXIF orientation
as ``PIL.ImageOps.exif_transpose`` (and transformers' ``load_image``) do, unless ``exif=False``. ``preprocess``
then does what Parrot's reference does before the vision tower: pad to a square with the mean colour, Pillow's
antialiased BICUBIC resize to ``size``, centre crop, scale by 1/255, normalise — the same numbers as Pillow +
transformers' PIL ``CLIPImageProcessor``, bit for bit.

Pillow is imported only for the formats the C decoders do not read: a PIL image is recognised by its type's
module name and converted with its own ``convert('RGB')``. Limits for untrusted input (docs/security.md):
``max_pixels`` (decoded size) and ``max_bytes`` (file size; only regular files are read).
"""
from __future__ import annotations

import io
import os
from typing import Any, Sequence, Union

import numpy as np

from parrot import _core
from parrot.errors import ImageError

__all__ = ["CLIP_MEAN", "CLIP_STD", "MAX_PIXELS", "MAX_FILE_BYTES", "ImageInput", "load_image", "clip_pixels",
           "preprocess", "resize_bicubic"]

#: OpenAI CLIP's normalisation (``image_mean`` / ``image_std`` of clip-vit-large-patch14-336).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: Images with more pixels are refused, like Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``).
MAX_PIXELS: int = 178_956_970
#: Image files larger than this are refused before they are read.
MAX_FILE_BYTES: int = 256 << 20

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]


def _check_limit(h: int, w: int, max_pixels: int | None, what: str) -> None:
    if h <= 0 or w <= 0:
        raise ImageError(f"{what}: image has zero size ({w}x{h})")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageError(f"{what}: image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} pixels "
                         "(a possible decompression bomb; raise max_pixels to accept it)")


def _from_array(a: np.ndarray, max_pixels: int | None, copy: bool) -> np.ndarray:
    if a.dtype != np.uint8:
        raise TypeError(f"image array must have dtype uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        _check_limit(a.shape[0], a.shape[1], max_pixels, "numpy array")
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageError(f"numpy array: expected shape H×W, H×W×3 or H×W×4, got {a.shape}")
    _check_limit(a.shape[0], a.shape[1], max_pixels, "numpy array")
    # RGBA → RGB drops alpha without compositing, as PIL's convert('RGB') does
    rgb = a[:, :, :3]
    return np.array(rgb, order="C") if copy else np.ascontiguousarray(rgb)


def _is_pil_image(obj: object) -> bool:
    return any(c.__module__.startswith("PIL.") and c.__name__ == "Image" for c in type(obj).__mro__)


# EXIF Orientation → the transform that makes the image upright, as PIL.ImageOps.exif_transpose applies it
_UPRIGHT = {
    2: lambda a: a[:, ::-1],                      # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],                   # ROTATE_180
    4: lambda a: a[::-1],                         # FLIP_TOP_BOTTOM
    5: lambda a: a.transpose(1, 0, 2),            # TRANSPOSE
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],   # ROTATE_270 (clockwise quarter turn)
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
    8: lambda a: a.transpose(1, 0, 2)[::-1],      # ROTATE_90
}

# Formats the C decoders do not read but Pillow does, by signature; no other Pillow plugin is ever used
_PILLOW_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                   (b"BM", "BMP"))


def _pillow_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _PILLOW_FORMATS if head.startswith(sig)), None)


def _decode_with_pillow(src: Any, fmt: str, what: str, max_pixels: int | None, exif: bool) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageError(f"{what}: {fmt} images are decoded through Pillow, which is not installed "
                         "(pip install pillow); PNG and JPEG need nothing") from None
    try:
        with Image.open(src, formats=[fmt]) as im:
            w, h = im.size
            _check_limit(h, w, max_pixels, what)
            up = ImageOps.exif_transpose(im) if exif else im
            return np.array(up.convert("RGB"), dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"{what}: cannot decode this {fmt} image with Pillow: {e}") from None


def _file_head(path: str) -> bytes:
    if not os.path.isfile(path):  # never open a FIFO or a device: it could block or never end
        return b""
    try:
        with open(path, "rb") as f:
            return f.read(12)
    except OSError:
        return b""


def _decoded(src: Any, what: str, max_pixels: int | None, max_bytes: int, exif: bool) -> np.ndarray:
    try:
        rgb: np.ndarray
        orientation: int
        rgb, orientation = _core.decode_image(src, max_pixels, max_bytes=max_bytes, orientation=True)
    except ImageError:
        # not PNG/JPEG (or broken): a format Pillow reads? (the C reader has already checked that a path is a
        # regular file within max_bytes)
        head = _file_head(src) if isinstance(src, str) else bytes(memoryview(src)[:12])
        fmt = _pillow_format(head)
        if fmt is None:
            raise
        return _decode_with_pillow(src if isinstance(src, str) else io.BytesIO(src), fmt, what, max_pixels, exif)
    if exif and orientation in _UPRIGHT:
        rgb = np.ascontiguousarray(_UPRIGHT[orientation](rgb))
    return rgb


def _rgb(image: ImageInput, max_pixels: int | None, copy: bool, exif: bool = True,
         max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                   or max_pixels <= 0):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return _decoded(path, path, max_pixels, max_bytes, exif)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decoded(image, "<bytes>", max_pixels, max_bytes, exif)
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels, copy)
    if _is_pil_image(image):
        w, h = image.size
        _check_limit(h, w, max_pixels, "PIL image")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.array(rgb, dtype=np.uint8)
    raise TypeError(f"cannot read an image from {type(image).__module__}.{type(image).__qualname__}; expected a "
                    "path, bytes, a uint8 numpy array or a PIL image")


def load_image(image: ImageInput, *, max_pixels: int | None = MAX_PIXELS, exif: bool = True,
               max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Returns the image as an H×W×3 uint8 RGB array (a new array the caller may modify).

    ``image`` may be a path (``str`` or ``os.PathLike``) or the bytes of an image file (``bytes``,
    ``bytearray``, ``memoryview``) — PNG and JPEG decoded in C to exactly the pixels of Pillow's
    ``Image.open(f).convert('RGB')``, GIF/TIFF/WebP/BMP through Pillow if it is installed — or a uint8 NumPy
    array of shape H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA; alpha is dropped, not composited, like PIL), or a
    PIL image (converted with its ``convert('RGB')``).

    ``exif``: files and bytes are turned upright by their EXIF Orientation, as ``PIL.ImageOps.exif_transpose``
    and transformers' ``load_image`` do; ``False`` keeps the stored pixel order (what ``parrot eval`` does,
    as VLMEvalKit). Arrays and PIL images are taken as they are.

    Raises ``parrot.ImageError`` (a ``ValueError``) naming the file and the problem for empty, truncated,
    corrupt, non-image or unsupported data, zero sizes, images above ``max_pixels`` pixels (``None``: no
    limit), a path that is not a regular file (a directory, a device, a FIFO) or is larger than ``max_bytes``;
    ``OSError``/``FileNotFoundError`` for paths that cannot be opened; ``TypeError`` for other Python types.
    """
    return _rgb(image, max_pixels, copy=True, exif=exif, max_bytes=max_bytes)


def _triple(v: Sequence[float], name: str) -> tuple[float, float, float]:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {len(t)}")
    return t[0], t[1], t[2]


def _check_size(size: int) -> None:
    if not isinstance(size, int) or not 1 <= size <= 16384:
        raise ValueError(f"size must be an int in 1..16384, got {size!r}")


def clip_pixels(image: ImageInput, *, size: int = 336, mean: Sequence[float] = CLIP_MEAN, pad: bool = True,
                max_pixels: int | None = MAX_PIXELS, exif: bool = True, max_bytes: int = MAX_FILE_BYTES
                ) -> np.ndarray:
    """The size×size×3 uint8 pixels the vision tower sees, before scaling and normalisation.

    With ``pad`` (Parrot's ``image_aspect_ratio == "pad"``) the image is first pasted on a max(w, h) square of
    colour ``tuple(int(m * 255) for m in mean)`` at ((S−w)//2, (S−h)//2). Then the shortest edge is resized to
    ``size`` (the long edge to ``int(size * long / short)``) with Pillow's BICUBIC, ``reducing_gap=None``, and
    the centre size×size is cropped, as the PIL CLIPImageProcessor does. Time and memory are linear in the
    image and output sizes, whatever the aspect ratio (the padded square is never built).
    """
    _check_size(size)
    rgb = _rgb(image, max_pixels, copy=False, exif=exif, max_bytes=max_bytes)
    out: np.ndarray = _core.clip_resize(rgb, size, bool(pad), _triple(mean, "mean"))
    return out


def preprocess(image: ImageInput, *, size: int = 336, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD, pad: bool = True,
               max_pixels: int | None = MAX_PIXELS, exif: bool = True, max_bytes: int = MAX_FILE_BYTES
               ) -> np.ndarray:
    """Parrot's image preprocessing (docs/model.md §1): a 3×size×size float32 CHW array for the CLIP vision tower.

    ``clip_pixels`` followed by ``x = float32(v * (1/255))`` and ``(x - mean) / std`` in float32, the
    arithmetic of transformers' rescale + normalize. Accepts everything ``load_image`` accepts, with its
    ``exif``, ``max_pixels`` and ``max_bytes``.
    """
    _check_size(size)
    m, s = _triple(mean, "mean"), _triple(std, "std")
    if any(v == 0.0 for v in s):
        raise ValueError(f"std must not contain 0, got {s}")
    rgb = _rgb(image, max_pixels, copy=False, exif=exif, max_bytes=max_bytes)
    out: np.ndarray = _core.clip_preprocess(rgb, size, bool(pad), m, s)
    return out


def resize_bicubic(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's ``Image.resize((width, height), Image.BICUBIC, reducing_gap=None)`` on an H×W×3 uint8 array."""
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"bad output size {width!r}x{height!r}")
    out: np.ndarray = _core.resize_bicubic(_from_array(np.asarray(rgb), None, copy=False), width, height)
    return out
