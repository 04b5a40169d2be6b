"""How a :class:`parrot.Result` shows itself in Jupyter: the image the model saw, the answer and the MoE's
routing weights as HTML, with the thumbnail inlined as a PNG (written here, so no Pillow is needed)."""
from __future__ import annotations

import base64
import html
import struct
import zlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from parrot.generation import Result

__all__ = ["thumbnail", "png", "result_html"]


def thumbnail(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], max_side: int = 112) -> np.ndarray:
    """The (padded, resized) image the model saw, back in uint8 RGB and at most max_side pixels wide."""
    step = max(1, -(-pixels.shape[1] // max_side))
    px = pixels[:, ::step, ::step]
    rgb = (px * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]) * 255
    return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0))


def png(rgb: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG of an H×W×3 uint8 array."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def result_html(r: "Result") -> str:
    """The HTML of a Result: thumbnail, prompt, answer (or error), routing bars, a line of figures."""
    parts = ['<div style="display:flex;gap:12px;align-items:flex-start;font-family:sans-serif">']
    if r.thumbnail is not None:
        b64 = base64.b64encode(png(r.thumbnail)).decode()
        parts.append(f'<img src="data:image/png;base64,{b64}" style="width:112px;image-rendering:auto" '
                     f'alt="image">')
    parts.append("<div>")
    if r.prompt:
        parts.append(f'<div style="color:#666">{html.escape(r.prompt)}</div>')
    if r.error is not None:
        parts.append(f'<div style="color:#b00">{html.escape(type(r.error).__name__)}: '
                     f'{html.escape(str(r.error))}</div>')
    else:
        parts.append(f'<div style="font-size:1.1em;margin:4px 0"><b>{html.escape(r.text)}</b></div>')
    if r.routing is not None:
        parts.append('<table style="border-collapse:collapse;font-size:0.85em">')
        for e, w in enumerate(r.routing):
            parts.append(f'<tr><td style="padding:0 6px">expert {e}</td><td style="width:160px">'
                         f'<div style="background:#4a7ebb;height:10px;width:{max(0.0, float(w)) * 100:.1f}%">'
                         f'</div></td><td style="padding:0 6px">{float(w):.3f}</td></tr>')
        parts.append("</table>")
    t = r.timings
    if t:
        parts.append(f'<div style="color:#888;font-size:0.8em">{t.get("new_tokens", 0):.0f} tokens, '
                     f'{t.get("decode_tokens_per_s", 0):.1f} tokens/s, prompt {t.get("prompt_tokens", 0):.0f} '
                     f'positions{", image cache hit" if r.image_cache_hit else ""}, '
                     f'finish: {html.escape(r.finish_reason)}</div>')
    parts.append("</div></div>")
    return "".join(parts)
