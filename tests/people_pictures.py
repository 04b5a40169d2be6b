"""A second renderer of the shipped model's world, written apart from training/data.py's generator so the held-out
tests see pictures drawn the way someone else would draw them.

What differs from the training generator on purpose:
- drawing code: numpy signed distances per pixel with analytic anti-aliasing (coverage = 0.5 - distance,
  clipped to [0, 1]), or hard edges; the trainer draws with Pillow's ImageDraw (optionally supersampled);
- colours: CSS/X11 named colours taken from Pillow's ImageColor table (e.g. firebrick, gold, seagreen,
  royalblue, darkorchid), each inside the named colour's range but none of them the trainer's own numbers;
- canvas sizes 96-640 px on the long side (the trainer: 64-320), objects placed on a jittered grid (the
  trainer: rejection sampling), star points 0.36-0.52 of the radius (the trainer: 0.45), squares with rounded
  or sharp corners, outlines as a band inside the shape;
- backgrounds: white, paper, greys, black, pale tints, linear or radial gradients.
"""
import io
import math

import numpy as np
from PIL import Image, ImageColor

SHAPES = ("circle", "square", "triangle", "star")
#: CSS colour names per colour word; tests check each lies in parrot.demo.COLOUR_HSV.
CSS_COLOURS = {
    "red": ("red", "firebrick", "crimson", "#d62728"),
    "orange": ("darkorange", "#ff7f0e", "#f28c28"),
    "yellow": ("yellow", "gold", "#f5d90a"),
    "green": ("green", "forestgreen", "limegreen", "seagreen", "#2ca02c"),
    "blue": ("blue", "royalblue", "dodgerblue", "mediumblue", "#1f77b4"),
    "purple": ("darkorchid", "darkviolet", "blueviolet", "rebeccapurple", "#7b2cbf"),
}
COLOURS = tuple(CSS_COLOURS)
BACKGROUNDS = ("white", "#fdf6e3", "lightgrey", "#d0d4d8", "dimgray", "#202124", "black", "#e8f0fe",
               "#fce8e6", "#e6f4ea", "ivory", "#2b2b3a")


def _segment_distance(px, py, ax, ay, bx, by):
    """Distance from every point (px, py) to the segment a-b."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _polygon_sdf(px, py, pts):
    """Signed distance to a simple polygon: negative inside (crossing-number test), positive outside."""
    dist = np.full(px.shape, np.inf)
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        dist = np.minimum(dist, _segment_distance(px, py, ax, ay, bx, by))
        if ay != by:
            cross = (ay > py) != (by > py)
            x_at = ax + (py - ay) * (bx - ax) / (by - ay)
            inside ^= cross & (px < x_at)
    return np.where(inside, -dist, dist)


def pose(shape, rng):
    """(turn in radians, detail) of one object: detail is the corner rounding (fraction of the half side) of a
    square, the inner radius (fraction of the outer) of a star, else None."""
    turn = rng.uniform(0, 2 * math.pi)
    if shape == "square":
        rounding = rng.uniform(0.0, 0.2)
        return (0.0 if rng.random() < 0.5 else turn), rounding
    if shape == "star":
        return turn, rng.uniform(0.36, 0.52)
    return turn, None


def shape_vertices(shape, cx, cy, r, obj_pose):
    """The polygon of a square (sharp corners), triangle or star of circumradius r."""
    turn, detail = obj_pose
    if shape == "square":
        return [(cx + r * math.cos(turn + math.pi / 4 + k * math.pi / 2),
                 cy + r * math.sin(turn + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    if shape == "triangle":
        return [(cx + r * math.cos(turn + k * 2 * math.pi / 3), cy + r * math.sin(turn + k * 2 * math.pi / 3))
                for k in range(3)]
    if shape == "star":
        return [(cx + (r if k % 2 == 0 else r * detail) * math.cos(turn + k * math.pi / 5),
                 cy + (r if k % 2 == 0 else r * detail) * math.sin(turn + k * math.pi / 5)) for k in range(10)]
    raise ValueError(shape)


def shape_sdf(shape, px, py, cx, cy, r, obj_pose):
    """Signed distance (pixels) of every point to one object of circumradius r centred at (cx, cy)."""
    if shape == "circle":
        return np.hypot(px - cx, py - cy) - r
    if shape == "square":  # a box in the object's own frame, corners rounded by `detail` of the half side
        turn, rounding = obj_pose
        half = r / math.sqrt(2)
        rr = half * rounding
        c, s = math.cos(turn), math.sin(turn)
        u, v = (px - cx) * c + (py - cy) * s, -(px - cx) * s + (py - cy) * c
        qx, qy = np.abs(u) - (half - rr), np.abs(v) - (half - rr)
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0) - rr
    return _polygon_sdf(px, py, shape_vertices(shape, cx, cy, r, obj_pose))


def _rgb(name):
    return np.array(ImageColor.getrgb(name)[:3], dtype=np.float64)


def _canvas(rng):
    """(width, height): long side 96-640; aspect ratio near square for 60 % of pictures, else up to 1:4 / 4:1."""
    ratios = (1.0, 4 / 3, 3 / 4, 1.25, 0.8) if rng.random() < 0.6 else (2.0, 0.5, 3.0, 1 / 3, 4.0, 0.25, 1.6, 0.625)
    aspect = ratios[rng.integers(len(ratios))]
    long_side = int(rng.integers(96, 641))
    short = int(round(long_side / max(aspect, 1 / aspect)))
    return (long_side, short) if aspect >= 1 else (short, long_side)


def _background(rng, w, h):
    base = _rgb(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    img = np.empty((h, w, 3))
    img[:] = base
    style = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w]
    if style == 1:  # linear gradient across the picture
        t = (xx / max(w - 1, 1)) if rng.random() < 0.5 else (yy / max(h - 1, 1))
        img += (t[..., None] - 0.5) * rng.uniform(10, 40) * (1 if base.mean() < 128 else -1)
    elif style == 2:  # vignette
        d = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
        img += (-d[..., None]) * rng.uniform(10, 50) * (1 if base.mean() > 128 else -1)
    return img


def _centres(rng, count, w, h, r, overlap):
    """Object centres on a jittered grid of cells over the canvas (one object per cell); with `overlap`, two
    neighbours are pulled together so that they overlap by a fifth of a radius."""
    cols = max(1, min(count, int(round(math.sqrt(count * w / h)))))
    rows = int(math.ceil(count / cols))
    cells = [(i, j) for j in range(rows) for i in range(cols)]
    cells = [cells[k] for k in rng.permutation(len(cells))[:count]]
    cw, ch = w / cols, h / rows
    out = []
    for i, j in cells:
        jx = max(0.0, cw / 2 - r - 1)
        jy = max(0.0, ch / 2 - r - 1)
        out.append([(i + 0.5) * cw + rng.uniform(-jx, jx), (j + 0.5) * ch + rng.uniform(-jy, jy)])
    if overlap and count >= 2:
        (ax, ay), (bx, by) = out[0], out[1]
        d = math.hypot(bx - ax, by - ay)
        want = 1.8 * r
        if d > want:
            f = (d - want) / d / 2
            out[0] = [ax + (bx - ax) * f, ay + (by - ay) * f]
            out[1] = [bx - (bx - ax) * f, by - (by - ay) * f]
    return out


def render(rng, shape, colour, count):
    """-> (PIL RGB image, dict(shape, colour, count, css)): `count` objects of one shape in one CSS colour."""
    w, h = _canvas(rng)
    img = _background(rng, w, h)
    css = CSS_COLOURS[colour][rng.integers(len(CSS_COLOURS[colour]))]
    fill = _rgb(css)
    cols = max(1, min(count, int(round(math.sqrt(count * w / h)))))
    rows = int(math.ceil(count / cols))
    cell = min(w / cols, h / rows)
    r = cell * rng.uniform(0.28, 0.42)  # circumradius: fits its grid cell
    overlap = count >= 2 and rng.random() < 0.2
    outlined = overlap or rng.random() < 0.35
    edge = fill * rng.uniform(0.0, 0.45)
    smooth = rng.random() < 0.7
    py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    for cx, cy in _centres(rng, count, w, h, r, overlap):
        sd = shape_sdf(shape, px, py, cx, cy, r * rng.uniform(0.9, 1.0), pose(shape, rng))
        cover = np.clip(0.5 - sd, 0.0, 1.0) if smooth else (sd <= 0).astype(np.float64)
        colour_here = np.broadcast_to(fill, img.shape).copy()
        if outlined:  # a band of the edge colour just inside the boundary
            band = max(1.5, r * 0.1)
            inner = np.clip(0.5 - (sd + band), 0.0, 1.0) if smooth else (sd + band <= 0).astype(np.float64)
            colour_here = inner[..., None] * fill + (1 - inner[..., None]) * edge
        img = cover[..., None] * colour_here + (1 - cover[..., None]) * img
    img += rng.normal(0, rng.uniform(0, 3), img.shape)
    pic = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.4:
        buf = io.BytesIO()
        pic.save(buf, format="JPEG", quality=int(rng.integers(25, 90)))
        pic = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return pic, {"shape": shape, "colour": colour, "count": count, "css": css}


def scenes(n, seed):
    """n pictures, cycling through every (shape, colour, count) so each appears about equally often."""
    rng = np.random.default_rng(seed)
    combos = [(s, c, k) for s in SHAPES for c in COLOURS for k in (1, 2, 3, 4)]
    order = rng.permutation(len(combos))
    out = []
    for i in range(n):
        shape, colour, count = combos[order[i % len(combos)]]
        out.append(render(rng, shape, colour, count))
    return out
