"""Synthetic multilingual visual questions for the shipped tiny Parrot (numpy + Pillow only, fixed seeds).

A scene is 1-4 objects of one shape and one colour (sizes and positions vary) on a varied background, drawn on a
canvas of random size and aspect ratio, so the preprocessing
(docs/model.md §1: pad to square, bicubic resize) is exercised.
Questions ask for the colour, the shape or the count, in six languages, either open (answer = one word in the
question's language) or MMMB-style multiple choice (options A-D, the language's instruction, answer = a letter).
This is the data the shipped model was trained on, and the default of train.py and make_heldout.py.

The "people" data (`--data people`; section at the end, not yet used for a shipped model) is closer to what people
ask and show: canvases 64-320 px with aspect ratios from 1:4 to 4:1, grey or tinted backgrounds (flat or gradient),
colours anywhere in each colour name's range (parrot.demo.COLOUR_HSV), turned squares, some objects overlapping
(then outlined), outlines, anti-aliased or hard edges, pixel noise and JPEG artefacts; every question worded by one
of the hand-written paraphrases of parrot.demo.PHRASINGS (parrot.demo.HELDOUT_PHRASINGS are never used), plus
"describe" requests answered by a short phrase such as "two red circles" (parrot.demo.describe).
"""
import base64
import colorsys
import io
import math

import numpy as np
from PIL import Image, ImageDraw

from parrot.demo import (COLOUR_HSV, COLOUR_RGB, COLOURS, COUNTS, HELDOUT_PHRASINGS, KINDS, LANGS,  # noqa: F401
                         OPEN_KINDS, PHRASINGS, QUESTIONS, SHAPES, WORDS, describe)
# ^ the shipped model's world (colours, shapes, counts, their words and the questions in six languages) is
#   defined once, in the package, where `parrot demo` asks about it

MMMB_FILE_CODE = {"en": "en", "zh": "cn", "pt": "pt", "ar": "ar", "tr": "tr", "ru": "ru"}  # MMMB names zh "cn"

# neutral or pastel backgrounds, far from every object colour
BACKGROUNDS = [(245, 245, 245), (200, 200, 200), (235, 225, 200), (215, 230, 245), (60, 60, 60), (20, 20, 20),
               (225, 240, 225), (245, 225, 235)]

# docs/model.md §11: the MMMB instruction per language, appended after the options with a "\n"
MC_INSTRUCTION = {
    "en": "Answer with the option's letter from the given choices directly.",
    "zh": "请直接用给定选项中的选项字母回答。",
    "pt": "Responda diretamente com a letra da opção das escolhas dadas.",
    "ar": "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
    "ru": "Ответьте буквой варианта из предложенных вариантов напрямую.",
    "tr": "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
}

SYSTEM_PROMPT = "You are a helpful assistant."


# ---- images ----------------------------------------------------------------------------------------------------
def _shape_polygon(shape, cx, cy, r, angle, turn_square=False, inner=0.45, rounding=0.0):
    """Vertices of a square, triangle or star of "radius" r centred at (cx, cy). `inner`: a star's inner radius as
    a fraction of r; `rounding`: a turned square's corner radius as a fraction of its half side (each corner then an
    arc of 6 points)."""
    if shape == "square" and turn_square:  # half-diagonal 0.85 * r * sqrt(2), turned by `angle`
        if rounding > 0:
            h = r * 0.85
            rr = h * rounding
            pts = []
            for k in range(4):  # corner k's arc centre at 45 + 90k degrees in the square's frame
                a0 = math.pi / 4 + k * math.pi / 2
                ox, oy = (h - rr) * math.sqrt(2) * math.cos(a0), (h - rr) * math.sqrt(2) * math.sin(a0)
                for j in range(6):  # the arc spans the corner's quarter turn
                    a = a0 - math.pi / 4 + j * (math.pi / 2) / 5
                    x, y = ox + rr * math.cos(a), oy + rr * math.sin(a)
                    pts.append((cx + x * math.cos(angle) - y * math.sin(angle),
                                cy + x * math.sin(angle) + y * math.cos(angle)))
            return pts
        d = r * 0.85 * math.sqrt(2)
        return [(cx + d * math.cos(angle + math.pi / 4 + k * math.pi / 2),
                 cy + d * math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * inner
            a = angle + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(shape)


def draw_scene(rng, shape, colour, count):
    """A PIL RGB image of `count` objects of one shape and colour on a random background and canvas."""
    # moderate aspect ratios: after padding to a square and resizing to the model's size, objects stay >= ~5 px
    w = int(rng.integers(72, 113))
    h = int(np.clip(w * rng.uniform(0.8, 1.25), 72, 112))
    bg = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dtype=np.float32)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = bg + rng.normal(0, 6, 3)
    if rng.random() < 0.5:  # a gentle gradient
        ramp = np.linspace(-1, 1, w if rng.random() < 0.5 else h)
        ramp = ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
        canvas += ramp * rng.uniform(5, 25)
    canvas += rng.normal(0, 3, canvas.shape)  # pixel noise
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    side = min(w, h)
    base = np.array(COLOUR_RGB[colour], dtype=np.int32)
    placed = []
    for _ in range(count):
        for _attempt in range(200):
            r = side * rng.uniform(0.11, 0.16 if count > 2 else 0.22)
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            return None  # no room: the caller draws a new scene
        placed.append((cx, cy, r))
        fill = tuple(int(v) for v in np.clip(base + rng.integers(-15, 16, 3), 0, 255))
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
    return img


def random_scene(rng):
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = COLOURS[rng.integers(len(COLOURS))]
        count = COUNTS[rng.integers(len(COUNTS))]
        img = draw_scene(rng, shape, colour, count)
        if img is not None:
            return {"shape": shape, "colour": colour, "count": count, "image": img}


def preprocess(image, size):
    """docs/model.md §1 (image_aspect_ratio 'pad' + CLIPImageProcessor): RGB, pad to a square with the mean colour,
    bicubic resize (Pillow, reducing_gap=None) to size x size, centre crop. Returns uint8 HxWx3 (unnormalised)."""
    image = image.convert("RGB")
    w, h = image.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (122, 116, 104))
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    resized = square.resize((size, size), Image.BICUBIC, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def normalise(uint8_hwc):
    """uint8 (...,H,W,3) -> float32 (...,3,H,W) CLIP-normalised."""
    x = (uint8_hwc.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return np.moveaxis(x, -1, -3).copy()


# ---- questions -------------------------------------------------------------------------------------------------
def _truth(scene, kind):
    return {"colour": scene["colour"], "shape": scene["shape"], "count": scene["count"]}[kind]


def _choices(kind):
    return {"colour": COLOURS, "shape": SHAPES, "count": COUNTS}[kind]


def open_question(scene, lang, kind, question=None):
    """-> (user text, answer text); the question defaults to the kind's QUESTIONS wording."""
    return question or QUESTIONS[lang][kind], answer_text(scene, lang, kind)


def answer_text(scene, lang, kind):
    """The open answer in the question's language: one word, or for "describe" a short phrase."""
    if kind == "describe":
        return describe(lang, scene["colour"], scene["shape"], scene["count"])
    return WORDS[lang][_truth(scene, kind)]


def mc_question(rng, scene, lang, kind, question=None):
    """MMMB-style multiple choice. -> dict(question, options {A..D: text or ''}, answer letter, prompt)."""
    truth = _truth(scene, kind)
    n_opts = 4 if rng.random() < 0.8 else 3
    others = [c for c in _choices(kind) if c != truth]
    picked = [truth] + [others[i] for i in rng.permutation(len(others))[:n_opts - 1]]
    order = rng.permutation(n_opts)
    picked = [picked[i] for i in order]
    letters = "ABCD"
    options = {letters[i]: (WORDS[lang][picked[i]] if i < n_opts else "") for i in range(4)}
    answer = letters[picked.index(truth)]
    question = question or QUESTIONS[lang][kind]
    return {"question": question, "options": options, "answer": answer,
            "prompt": mmmb_prompt(question, options, lang)}


def mmmb_prompt(question, options, lang, hint=""):
    """docs/model.md §11: hint + "\\n" (if any) + question, "\\n{L}. {option}" per non-empty option, "\\n" + instruction."""
    prompt = (hint + "\n" if hint else "") + question
    for letter in "ABCD":
        if options.get(letter):
            prompt += f"\n{letter}. {options[letter]}"
    return prompt + "\n" + MC_INSTRUCTION[lang]


def chat_prompt(user_text):
    """Parrot's QwenConversationFormatter with query = "<image>\\n" + user_text, ready for the assistant turn."""
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<image>\n{user_text}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def sample_question(rng, scene, lang=None, kind=None, mc=None):
    """-> dict(lang, kind, mc, user, answer)."""
    lang = lang or LANGS[rng.integers(len(LANGS))]
    kind = kind or KINDS[rng.integers(len(KINDS))]
    mc = bool(rng.random() < 0.5) if mc is None else mc
    if mc:
        q = mc_question(rng, scene, lang, kind)
        return {"lang": lang, "kind": kind, "mc": True, "user": q["prompt"], "answer": q["answer"], "mcq": q}
    user, answer = open_question(scene, lang, kind)
    return {"lang": lang, "kind": kind, "mc": False, "user": user, "answer": answer}


def all_texts():
    """Every string the model reads or writes (tokenizer training corpus)."""
    texts = [SYSTEM_PROMPT, "<|im_start|>system\n", "<|im_end|>\n", "<|im_start|>user\n", "<|im_start|>assistant\n"]
    for lang in LANGS:
        texts += list(QUESTIONS[lang].values()) + [MC_INSTRUCTION[lang]]
        texts += [str(v) for v in WORDS[lang].values()]
        for word in WORDS[lang].values():
            texts += [f"\n{letter}. {word}" for letter in "ABCD"]
    return texts


def png_base64(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---- the "people" data (--data people) ----------------------------------------------------------------------------
def _hsv_rgb(h, s, v):
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb((h / 360.0) % 1.0, s, v))


def object_colour(rng, colour):
    """An RGB colour anywhere in the named colour's range (COLOUR_HSV)."""
    h0, h1, s0, v0 = COLOUR_HSV[colour]
    return _hsv_rgb(rng.uniform(h0, h1), rng.uniform(s0, 1.0), rng.uniform(v0, 1.0))


def background_colour(rng):
    """Grey from black to white, or a pale or dark tint: saturation <= 0.25 and value outside 0.3-0.65, so no
    background is itself a named colour nor as dark or light as the darkest objects."""
    v = rng.uniform(0.0, 0.3) if rng.random() < 0.35 else rng.uniform(0.65, 1.0)
    s = 0.0 if rng.random() < 0.4 else rng.uniform(0.0, 0.25)
    return np.array(_hsv_rgb(rng.uniform(0, 360), s, v), dtype=np.float32)


def canvas_size(rng, wide=0.0):
    """(width, height): long side 64-320 px; aspect ratio 3:4-4:3 for 60 % of the pictures, else 1:4-4:1. `wide` F
    > 0 (train.py --wide): a share F of the pictures is first made clearly wide or tall instead, the logarithm of
    the aspect ratio uniform in log 1.5-log 4 either way (after the resize to the tower's side such pictures hold
    the smallest objects, the hardest to tell apart)."""
    if wide and rng.random() < wide:
        magnitude = rng.uniform(math.log(1.5), math.log(4))
        aspect = math.exp(magnitude if rng.random() < 0.5 else -magnitude)
    else:
        lim = math.log(4 / 3) if rng.random() < 0.6 else math.log(4)
        aspect = math.exp(rng.uniform(-lim, lim))
    long_side = int(rng.integers(64, 321))
    short = max(16, int(round(long_side / max(aspect, 1 / aspect))))
    return (long_side, short) if aspect >= 1 else (short, long_side)


def draw_scene_people(rng, shape, colour, count, variety=False, wide=0.0):
    """A PIL RGB image of `count` objects of one shape and colour: canvas of random size and aspect ratio (1:4 to
    4:1), background (grey or tinted, flat or gradient), object sizes and positions (some overlapping, then
    outlined so they stay countable), outlines, anti-aliasing (drawn 3x larger and reduced) or none, pixel noise
    and JPEG artefacts. Returns None when the objects do not fit (the caller draws a new scene).

    `variety` (train.py --variety): each shape drawn more of the ways people draw it — squares turned at any angle
    in 60 % of the pictures (else 30 %) and with corners rounded by up to 30 % of the half side in 40 %, stars'
    inner radius anywhere in 0.35-0.55 of the outer (else 0.45). Without it no extra random numbers are drawn, so
    earlier runs' pools are what they were. `wide`: canvas_size's."""
    w, h = canvas_size(rng, wide)
    ss = 3 if rng.random() < 0.6 else 1  # supersampling: anti-aliased edges
    bg = background_colour(rng)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = bg
    if rng.random() < 0.5:  # a gentle gradient
        ramp = np.linspace(-1, 1, w if rng.random() < 0.5 else h)
        ramp = ramp[None, :, None] if ramp.size == w else ramp[:, None, None]
        canvas += ramp * rng.uniform(5, 25)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if ss > 1:
        img = img.resize((w * ss, h * ss), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    # Objects are sized by the room each has: the canvas split into a grid of about `count` cells shaped like the
    # canvas. Sized by the short side alone, four objects on a 4:1 canvas would be 1-4 px wide after the resize
    # to 64 px, too small to tell a star from a circle (the tower then learnt shape to 0.72, count to 0.81).
    cols = int(np.clip(round(math.sqrt(count * w / h)), 1, count))
    rows = -(-count // cols)
    cell = min(w / cols, h / rows)
    r_lo, r_hi = (0.14 * cell, 0.42 * cell) if count == 1 else (0.2 * cell, 0.4 * cell)
    overlap = count > 1 and rng.random() < 0.25
    outline = overlap or rng.random() < 0.3
    fill_base = object_colour(rng, colour)
    line = (tuple(int(c * rng.uniform(0.0, 0.5)) for c in fill_base) if rng.random() < 0.7
            else tuple(int(v) for v in (255 - bg)))  # a dark edge, or one contrasting with the background
    placed = []
    for _ in range(count):
        for _attempt in range(200):
            r = rng.uniform(r_lo, r_hi)
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            # overlapping objects may share up to ~30 % of their radii, so each stays visible
            if all(math.hypot(cx - px, cy - py) > (0.7 if overlap else 1.0) * (r + pr) + (0 if overlap else 2)
                   for px, py, pr in placed):
                break
        else:
            return None
        placed.append((cx, cy, r))
        fill = tuple(int(v) for v in np.clip(np.array(fill_base) + rng.integers(-10, 11, 3), 0, 255))
        width = max(1, int(round(r * rng.uniform(0.06, 0.14)))) * ss if outline else 0
        X, Y, R = cx * ss, cy * ss, r * ss
        if shape == "circle":
            draw.ellipse([X - R, Y - R, X + R, Y + R], fill=fill, outline=line if outline else None, width=width)
        else:
            angle = (rng.uniform(0, 2 * math.pi)
                     if shape != "square" or rng.random() < (0.6 if variety else 0.3) else 0.0)
            inner = rng.uniform(0.35, 0.55) if variety and shape == "star" else 0.45
            rounding = (rng.uniform(0.05, 0.3) if variety and shape == "square" and rng.random() < 0.4 else 0.0)
            draw.polygon(_shape_polygon(shape, X, Y, R, angle, True, inner, rounding), fill=fill,
                         outline=line if outline else None, width=width)
    if ss > 1:
        img = img.resize((w, h), Image.BOX)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(0, 4)  # sensor noise
    pixels = np.asarray(img, dtype=np.float32) + noise
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.35:  # JPEG artefacts
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(15, 86)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def random_labels(rng):
    """A scene without its picture: {shape, colour, count}."""
    return {"shape": SHAPES[rng.integers(len(SHAPES))], "colour": COLOURS[rng.integers(len(COLOURS))],
            "count": COUNTS[rng.integers(len(COUNTS))]}


def random_scene_people(rng, variety=False, wide=0.0):
    scene = random_labels(rng)
    while True:  # the same labels until they fit, so every count stays as frequent as the others
        img = draw_scene_people(rng, scene["shape"], scene["colour"], scene["count"], variety, wide)
        if img is not None:
            return {**scene, "image": img}


def drop_words(rng, question, lang, p):
    """`question` with each word (each character in Chinese, which has no spaces) left out with probability `p`,
    keeping at least one."""
    pieces = list(question) if lang == "zh" else question.split()
    keep = rng.random(len(pieces)) >= p
    if not keep.any():
        keep[rng.integers(len(pieces))] = True
    return ("" if lang == "zh" else " ").join(w for w, k in zip(pieces, keep) if k)


def sample_question_people(rng, scene, lang=None, kind=None, mc=None, phrasings=PHRASINGS, word_dropout=0.0):
    """-> dict(lang, kind, mc, user, answer). The question's wording is drawn from `phrasings` (training's by
    default); "describe" is always open. `word_dropout` P > 0 (train.py --word-dropout): half the questions lose
    each word with probability P (drop_words), so no one template word decides the kind or the language; without it
    no extra random numbers are drawn."""
    lang = lang or LANGS[rng.integers(len(LANGS))]
    kind = kind or OPEN_KINDS[rng.integers(len(OPEN_KINDS))]
    mc = bool(rng.random() < 0.5) if mc is None else mc
    mc = mc and kind != "describe"
    options = phrasings[lang][kind]
    question = options[rng.integers(len(options))]
    if word_dropout and rng.random() < 0.5:
        question = drop_words(rng, question, lang, word_dropout)
    if mc:
        q = mc_question(rng, scene, lang, kind, question)
        return {"lang": lang, "kind": kind, "mc": True, "user": q["prompt"], "answer": q["answer"], "mcq": q}
    user, answer = open_question(scene, lang, kind, question)
    return {"lang": lang, "kind": kind, "mc": False, "user": user, "answer": answer}


# --recipe people2: 5 more hand-written training wordings per kind for the Latin-script languages, whose held-out
# wordings share fewer words with PHRASINGS than the others' (run 2 in training/README.md answered some Portuguese
# and English requests in Turkish). Never any of HELDOUT_PHRASINGS (tests/test_shipped_model.py checks).
MORE_PHRASINGS = {
    "en": {"colour": ["What colour are these?", "Which colour is used for the shapes?", "What's their colour?",
                      "Do you know what colour the objects are?", "What colour have they been painted"],
           "shape": ["What shape are these?", "What is the shape of these things?", "What shapes do you see",
                     "Do you know what shape the objects are?", "What's their shape?"],
           "count": ["How many are in the picture?", "How many do you see", "What's the count?",
                     "Do you know how many shapes there are?", "how many objects"],
           "describe": ["What does the drawing show?", "Describe it.", "Tell me about the picture.",
                        "What is drawn in this picture?", "Explain what the picture shows"]},
    "pt": {"colour": ["Que cor é essa?", "De que cor estão pintados os objetos?", "Sabe qual é a cor delas?",
                      "E a cor, qual é?", "Qual cor aparece nas figuras"],
           "shape": ["Que formas são essas?", "Os objetos têm que forma?", "Sabe qual é o formato delas?",
                     "E a forma, qual é?", "Qual figura está na imagem"],
           "count": ["Quantos objetos tem aqui?", "Quantas figuras aparecem?", "Sabe quantas formas são?",
                     "Conta pra mim quantos objetos há.", "quantas tem"],
           "describe": ["Descreve a imagem pra mim.", "O que tem aqui?", "Fale sobre a imagem.", "Como é a imagem?",
                        "O que foi desenhado"]},
    "tr": {"colour": ["Bunların rengi ne?", "Nesnelerin rengi hangisi?", "Hangi renkteler?", "Rengi nedir?",
                      "Şekiller hangi renge boyanmış"],
           "shape": ["Bunların şekli ne?", "Nesneler hangi biçimde?", "Şekli nedir?", "Ne şekil bunlar?",
                     "Hangi şekli görüyorsun"],
           "count": ["Kaç nesne var?", "Kaç tane şekil görüyorsun?", "Nesneleri sayar mısın?", "Sayısı kaç?",
                     "Kaç cisim görünüyor"],
           "describe": ["Resmi tarif et.", "Ne çizilmiş?", "Bana resmi anlatır mısın?", "Resimde ne görünüyor?",
                        "Resim hakkında bilgi ver"]},
}
PHRASINGS_MORE = {lang: {kind: PHRASINGS[lang][kind] + MORE_PHRASINGS.get(lang, {}).get(kind, [])
                         for kind in OPEN_KINDS} for lang in LANGS}


# --extra-phrasings: 18-20 more hand-written training wordings per kind, for every language, written without looking
# at HELDOUT_PHRASINGS. The model keyed on surface templates ("Tell me ..., please." meant one kind) rather than on the
# word that says what is asked, so here the frames (terse, question, imperative, polite at the start or the end,
# colloquial; subjects it / this / they / the objects / figures / things / picture; with and without a question mark)
# are shared across the four kinds, and only the key word (colour / shape / how many / describe) tells them apart.
# Turkish shape questions never use "şekiller" as their subject ("shapes" and "figures" alike). Never any of
# HELDOUT_PHRASINGS (tests/test_shipped_model.py checks): ten first drafts (en, pt, ar, tr) turned out to be held-out
# wordings and were replaced by other frames (in every kind where the frame was shared); then the 17 of the 480 that
# came within a word or a few letters of a held-out wording (difflib ratio >= 0.85 on the normalised text, e.g.
# "What colour is this" / "What colour is it?") were removed, so that the held-out tests still ask wordings that
# training has not all but seen (test_extra_wordings_keep_their_distance_from_the_held_out_ones).
EXTRA_PHRASINGS = {
    "en": {"colour": ["Colour, please.", "the colour", "Let me know the colour.", "Say the colour of the figures",
                      "Please name the colour of these things.", "Could you tell me their colour?",
                      "What colour would you call them?", "What colour are the things in the image?",
                      "What colour are the figures in the drawing?",
                      "so what colour are they", "Colour of the objects, please.",
                      "Would you mind telling me the colour?", "any idea what colour these are?",
                      "I'd like to know the colour of the shapes.", "What colour is the figure?",
                      "Quick question: what colour?", "Tell me, what colour are the objects in the picture",
                      "colour of them?"],
           "shape": ["Shape, please.", "the shape", "Let me know the shape.", "Say the shape of the figures",
                     "Please name the shape of these things.", "Could you tell me their shape?",
                     "What shape would you call them?", "What shape are the things in the image?",
                     "What shape are the figures in the drawing?", "so what shape are they",
                     "Shape of the objects, please.", "Would you mind telling me the shape?",
                     "any idea what shape these are?", "I'd like to know the shape of the objects.",
                     "What shape is the figure?", "Quick question: what shape?",
                     "Tell me, what shape are the objects in the picture", "shape of them?"],
           "count": ["Count, please.", "the number of them", "Let me know the number.",
                     "Say how many figures there are", "Please count these things.",
                     "Could you tell me how many there are?", "How many of these are there?", "how many here",
                     "How many things are in the image?", "How many figures are in the drawing?",
                     "so how many are there", "Number of objects, please.", "Would you mind counting them?",
                     "any idea how many there are?", "I'd like to know the number of shapes.", "How many figures?",
                     "Quick question: how many?", "Tell me, how many objects are in the picture", "count?",
                     "Give me the count, please."],
           "describe": ["Description, please.", "a description", "Let me know what's in it.",
                        "Say what the drawing shows", "Please describe these things.", "Could you describe it for me?",
                        "What is it?", "what is on the image", "What are the things in the image?",
                        "What is in the drawing?", "so what do you see", "Summary of the picture, please.",
                        "Would you mind describing the picture?", "any idea what's in the image?",
                        "I'd like a description of the picture.", "Summarise the image.",
                        "Quick question: what's in the picture?", "Tell me, what do you see in the image",
                        "what's there?", "Give me a description, please."]},
    "zh": {"colour": ["颜色呢", "请告诉我它们的颜色", "说一下这些东西的颜色吧", "能说说这些物体是什么颜色吗？", "麻烦说一下颜色，谢谢。", "它是什么颜色？",
                      "这些是什么颜色", "图像里的东西是啥颜色？", "这幅画里的图案是什么颜色", "那它们啥颜色啊？", "物体的颜色，谢谢", "可以告诉我颜色吗", "你知道这些图形是什么颜色吗？",
                      "我想知道这些图形的颜色。", "这个图案是什么颜色的？", "问一下，什么颜色？", "说说看，图片中的物体是什么颜色", "颜色是啥？", "请给出颜色。"],
           "shape": ["形状呢", "请告诉我它们的形状", "说一下这些东西的形状吧", "能说说这些物体是什么形状吗？", "麻烦说一下形状，谢谢。", "它是什么形状？", "这些是什么形状",
                     "图像里的东西是啥形状？", "这幅画里的图案是什么形状", "那它们啥形状啊？", "物体的形状，谢谢", "可以告诉我形状吗", "你知道这些物体是什么形状吗？",
                     "我想知道这些物体的形状。", "这个图案是什么形状的？", "问一下，什么形状？", "说说看，图片中的物体是什么形状", "形状是啥？", "请给出形状。"],
           "count": ["数量呢", "告诉我数量。", "请告诉我它们有几个", "说一下这些东西有多少个吧", "能说说有几个物体吗？", "麻烦数一下，谢谢。", "它们有几个？", "这些有几个",
                     "图像里的东西有几个？", "这幅画里有几个图案", "那一共几个啊？", "物体的数量，谢谢", "可以告诉我数量吗", "你知道有多少个图形吗？", "我想知道物体的个数。",
                     "这个图里画了多少个？", "问一下，有几个？", "说说看，图片中有几个物体", "个数是多少？", "请给出数量。"],
           "describe": ["内容呢", "请告诉我图片的内容", "说一下这张图吧", "能说说这张图画了什么吗？", "麻烦描述一下，谢谢。", "它是什么？", "这些是什么",
                        "图像里都有什么？", "这幅画画的是什么", "那你看到啥了啊？", "图片的描述，谢谢", "可以描述一下吗", "你知道这张图里有什么吗？", "我想知道图片里有什么。",
                        "概括一下这张图片。", "问一下，图上有啥？", "说说看，你在图片中看到了什么", "图里是啥？", "请给出图片的描述。"]},
    "pt": {"colour": ["A cor, por favor.", "cor delas", "Consegue me dizer a cor?", "Diga a cor das figuras",
                      "Por favor, informe a cor desses objetos.", "Poderia me dizer a cor deles?",
                      "Qual é a cor disso?", "De que cor é isto", "Qual a cor das coisas na imagem?",
                      "De que cor são as figuras no desenho", "e aí, que cor é?", "Cor dos objetos, por favor.",
                      "Você se importa de me dizer a cor?", "sabe que cor são essas?",
                      "Eu queria saber a cor das formas.", "De que cor é a figura?", "Só uma pergunta: qual é a cor?",
                      "Fala aí, que cor têm os objetos na imagem", "Me fala a cor, por favor."],
           "shape": ["A forma, por favor.", "forma delas", "Consegue me dizer a forma?", "Diga a forma das figuras",
                     "Por favor, informe a forma desses objetos.", "Poderia me dizer a forma deles?",
                     "Qual é a forma disso?", "Que formato é isto", "Qual o formato das coisas na imagem?",
                     "Que forma têm as figuras no desenho", "e aí, que forma é?", "Formato dos objetos, por favor.",
                     "Você se importa de me dizer a forma?", "sabe que formato é esse?",
                     "Eu queria saber a forma dos objetos.", "Qual é o formato da figura?",
                     "Só uma pergunta: qual é a forma?", "Fala aí, que forma têm os objetos na imagem",
                     "qual o formato?"],
           "count": ["A quantidade, por favor.", "quantas são", "Consegue me dizer quantos são?",
                     "Diga quantas figuras há", "Por favor, conte esses objetos.", "Poderia me dizer quantos são?",
                     "Quantos tem aí?", "Quantos são estes", "Quantas coisas tem na imagem?",
                     "Quantas figuras há no desenho", "e aí, quantos são?", "Número de objetos, por favor.",
                     "Você se importa de contar os objetos?", "sabe quantas formas tem aí?",
                     "Eu queria saber o número de formas.", "Quantas figuras são?", "Só uma pergunta: quantos são?",
                     "Fala aí, quantos objetos há na imagem", "qual a quantidade?", "Me fala quantos são, por favor."],
           "describe": ["Uma descrição, por favor.", "descrição da imagem", "Consegue me dizer o que tem na imagem?",
                        "Diga o que o desenho mostra", "Por favor, descreva esses objetos.",
                        "Poderia me descrever a imagem?", "O que é isto?", "O que tem nisso",
                        "Que coisas tem na imagem?", "O que há no desenho", "e aí, o que você tá vendo?",
                        "Resumo da imagem, por favor.", "Você se importa de descrever a imagem?",
                        "sabe o que tem na imagem?", "Eu queria uma descrição da figura.", "Resuma a imagem.",
                        "Só uma pergunta: o que tem na imagem?", "Fala aí, o que você vê na imagem",
                        "o que aparece aí?", "Me explica a imagem, por favor."]},
    "ar": {"colour": ["اللون من فضلك.", "لونها", "أود معرفة اللون.", "اذكر لون الأشياء",
                      "من فضلك، أخبرني بلون هذه الأجسام.", "هل تستطيع أن تقول لي لونها؟", "ما لونه؟", "ما لون هذا",
                      "ما لون الأشياء الموجودة في الصورة؟", "ما لون الأشكال في الرسمة", "طيب، إيش لونها؟",
                      "هل تمانع أن تخبرني باللون؟", "هل تعرف ما لون هذه الأشياء؟",
                      "أريد أن أعرف لون الأشكال.", "سؤال سريع: ما اللون؟",
                      "قل لي، ما لون الأجسام في الصورة", "أي لون؟", "أعطني اللون من فضلك."],
           "shape": ["الشكل من فضلك.", "شكلها", "أود معرفة الشكل.", "اذكر شكل الأشياء",
                     "من فضلك، أخبرني بشكل هذه الأجسام.", "هل تستطيع أن تقول لي شكلها؟", "ما شكله؟", "هذا شكله إيه؟",
                     "ما شكل الأشياء الموجودة في الصورة؟", "ما شكل العناصر في الرسمة", "طيب، إيش شكلها؟",
                     "هل تمانع أن تخبرني بالشكل؟", "هل تعرف ما شكل هذه الأشياء؟",
                     "أريد أن أعرف شكل الأجسام.", "ما شكل الجسم؟", "سؤال سريع: ما الشكل؟",
                     "قل لي، ما شكل الأجسام في الصورة", "أي شكل؟", "أعطني الشكل من فضلك."],
           "count": ["العدد من فضلك.", "عددها", "أود معرفة العدد.", "اذكر عدد الأشياء", "من فضلك، عد هذه الأجسام.",
                     "هل تستطيع أن تقول لي كم عددها؟", "كم واحداً هنا؟", "كم عدد هذه", "كم شيئاً يوجد في الصورة؟",
                     "كم عنصراً في الرسمة", "طيب، كم واحد؟", "هل تمانع أن تعد الأشكال؟",
                     "هل تعرف كم شكلاً هنا؟", "أريد أن أعرف عدد الأشكال.", "كم شكلاً؟", "سؤال سريع: كم العدد؟",
                     "قل لي، كم جسماً في الصورة", "كم يوجد؟", "أعطني العدد من فضلك."],
           "describe": ["وصفاً من فضلك.", "وصف الصورة", "أود وصفاً للصورة.", "اذكر ما في الرسمة",
                        "من فضلك، صف هذه الأشياء.", "هل تستطيع أن تصف لي الصورة؟", "ما هو؟", "ما الموجود هنا",
                        "ما الأشياء الموجودة في الصورة؟", "ماذا في الرسمة", "طيب، إيش تشوف؟", "ملخص الصورة من فضلك.",
                        "هل تمانع أن تصف الصورة؟", "هل تعرف ماذا يوجد في الصورة؟", "أريد أن أعرف ما في الصورة.",
                        "لخص الصورة.", "سؤال سريع: ماذا ترى؟", "قل لي، ماذا ترى في الصورة", "ماذا يوجد؟",
                        "أعطني وصفاً للصورة من فضلك."]},
    "tr": {"colour": ["Rengi lütfen.", "renkleri", "Figürlerin rengini söyle",
                      "Lütfen bu nesnelerin rengini belirt.", "Bana renklerini söyleyebilir misin?", "O ne renk?",
                      "Bunun rengi ne", "Resimdeki şeyler ne renk?", "Çizimdeki figürler hangi renkte",
                      "e, bunlar ne renk ya?", "Nesnelerin rengi, lütfen.", "Rengini söyler misiniz acaba?",
                      "bunların ne renk olduğunu biliyor musun?", "Şekillerin rengini öğrenmek istiyorum.",
                      "Figür ne renk?", "Kısa bir soru: ne renk?", "Söylesene, resimdeki nesneler ne renk", "rengi ne?",
                      "Rengi yaz, lütfen."],
           "shape": ["Şekli lütfen.", "biçimleri", "Figürlerin şeklini söyle",
                     "Lütfen bu nesnelerin şeklini belirt.", "Bana şekillerini söyleyebilir misin?", "O ne şekil?",
                     "Bu ne şekil", "Resimdeki şeyler ne şekil?", "Çizimdeki figürler ne şekil",
                     "e, bunlar ne şekil ya?", "Nesnelerin şekli, lütfen.", "Şeklini söyler misiniz acaba?",
                     "bunların ne şekil olduğunu biliyor musun?", "Nesnelerin şeklini öğrenmek istiyorum.",
                     "Figür ne şekil?", "Kısa bir soru: ne şekil?", "Söylesene, resimdeki nesnelerin şekli ne",
                     "biçimi ne?", "Şekli yaz, lütfen."],
           "count": ["Sayısı lütfen.", "kaç adet", "Kaç tane olduğunu söyle lütfen.", "Figürlerin sayısını söyle",
                     "Lütfen bu nesnelerin sayısını belirt.", "Bana kaç tane olduklarını söyleyebilir misin?",
                     "Onlardan kaç tane var?", "Bunlar kaç tane", "Resimde kaç şey var?", "Çizimde kaç figür var",
                     "e, kaç tane bunlar ya?", "Nesnelerin sayısı, lütfen.", "Kaç tane olduğunu söyler misiniz acaba?",
                     "kaç tane olduklarını biliyor musun?", "Şekillerin sayısını öğrenmek istiyorum.", "Kaç figür?",
                     "Kısa bir soru: kaç tane?", "Söylesene, resimde kaç nesne var", "kaç taneler?",
                     "Sayıyı yaz, lütfen."],
           "describe": ["Açıklama lütfen.", "resmin içeriği", "Resimde ne olduğunu söyle lütfen.",
                        "Çizimin ne gösterdiğini söyle", "Lütfen bu resmi betimle.", "Bana resmi tarif edebilir misin?",
                        "O ne?", "Bunlar ne", "Resimdeki şeyler ne?", "Çizimde ne var", "e, ne görüyorsun ya?",
                        "Resmin özeti, lütfen.", "Resmi anlatır mısınız acaba?", "resimde ne olduğunu biliyor musun?",
                        "Resimde ne olduğunu öğrenmek istiyorum.", "Resmi özetle.", "Kısa bir soru: resimde ne var?",
                        "Söylesene, resimde ne görüyorsun", "ne var?", "Resmi açıkla, lütfen."]},
    "ru": {"colour": ["Цвет, пожалуйста.", "их цвет", "Скажи цвет, пожалуйста.", "Назови цвет фигурок",
                      "Пожалуйста, укажите цвет этих предметов.", "Не могли бы вы сказать, какого они цвета?",
                      "Это какого цвета?", "Какого цвета это", "Какого цвета штуки на картинке?",
                      "Какого цвета фигуры на рисунке", "ну и какого они цвета", "Цвет предметов, пожалуйста.",
                      "Подскажите, какого они цвета?", "знаешь, какого цвета эти фигуры?", "Хочу узнать цвет объектов.",
                      "Какого цвета фигура?", "Быстрый вопрос: какой цвет?",
                      "Скажи-ка, какого цвета объекты на изображении", "цвет какой?"],
           "shape": ["Форму, пожалуйста.", "их форма", "Скажи форму, пожалуйста.", "Назови форму предметов",
                     "Пожалуйста, укажите форму этих предметов.", "Не могли бы вы сказать, какой они формы?",
                     "Это какой формы?", "Какой формы это", "Какой формы штуки на картинке?",
                     "Какой формы объекты на рисунке", "ну и какой они формы", "Форма предметов, пожалуйста.",
                     "Подскажите, какой они формы?", "знаешь, какой формы эти предметы?", "Хочу узнать форму объектов.",
                     "Какой формы предмет?", "Быстрый вопрос: какая форма?",
                     "Скажи-ка, какой формы объекты на изображении", "форма какая?"],
           "count": ["Количество, пожалуйста.", "их количество", "Скажи, сколько их, пожалуйста.",
                     "Назови число фигурок", "Пожалуйста, посчитайте эти предметы.",
                     "Не могли бы вы сказать, сколько их?", "Это сколько штук?", "Сколько штук",
                     "Сколько штук на картинке?", "Сколько фигур на рисунке", "ну и сколько их",
                     "Число предметов, пожалуйста.", "Подскажите, сколько их?", "знаешь, сколько тут фигур?",
                     "Хочу узнать количество объектов.", "Сколько фигурок?", "Быстрый вопрос: сколько?",
                     "Скажи-ка, сколько объектов на изображении", "сколько всего?", "Напиши количество, пожалуйста."],
           "describe": ["Описание, пожалуйста.", "что там", "Скажи, что на картинке, пожалуйста.",
                        "Назови, что нарисовано", "Пожалуйста, опишите эти предметы.",
                        "Не могли бы вы описать изображение?", "Это что?", "Что это такое", "Что за штуки на картинке?",
                        "Что на рисунке", "ну и что ты видишь", "Краткое описание картинки, пожалуйста.",
                        "Подскажите, что изображено?", "знаешь, что на этой картинке?",
                        "Хочу узнать, что на изображении.", "Перескажи, что на картинке.",
                        "Быстрый вопрос: что на картинке?", "Скажи-ка, что ты видишь на изображении", "что видишь?",
                        "Объясни, что на рисунке, пожалуйста."]},
}
PHRASINGS_EXTRA = {lang: {kind: PHRASINGS_MORE[lang][kind] + EXTRA_PHRASINGS[lang][kind] for kind in OPEN_KINDS}
                   for lang in LANGS}


def all_texts_people(phrasings=PHRASINGS):
    """Every string the model reads or writes with the people data (tokenizer training corpus)."""
    texts = [SYSTEM_PROMPT, "<|im_start|>system\n", "<|im_end|>\n", "<|im_start|>user\n", "<|im_start|>assistant\n"]
    for lang in LANGS:
        texts += [q for kind in OPEN_KINDS for q in phrasings[lang][kind]] + [MC_INSTRUCTION[lang]]
        texts += [str(v) for v in WORDS[lang].values()]
        texts += [describe(lang, c, s, n) for c in COLOURS for s in SHAPES for n in COUNTS]
        for word in WORDS[lang].values():
            texts += [f"\n{letter}. {word}" for letter in "ABCD"]
    return texts


def jpeg_base64(image):
    """Base64 JPEG (quality 95), as MMMB's TSVs store their images: small enough for csv's default 128 KiB field
    limit even for the noisiest 320 px pictures (PNG is not)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# A second English held-out set, written (session 16) after the first held-out set's English misses were known and
# before any model trained with the grammar below was evaluated, so that English can still be measured on wordings
# nobody tuned against: the test's people procedure on these (tests/test_shipped_model.py) is a blind check.
HELDOUT_ENGLISH_2 = {
    "colour": ["What colour is the thing in the picture?", "which colours are used",
               "Could you tell me what colour that is?", "Tell me its colour.", "What's the colour of that?"],
    "shape": ["What is the shape of the thing in the picture?", "which shapes are used",
              "Could you tell me what shape that is?", "Tell me its shape.", "What's the shape of that?"],
    "count": ["Give me a count of the objects", "how many do we have here", "Could you count them for me?",
              "Tell me the number of shapes.", "How many of those do you see?"],
    "describe": ["What is going on in this picture?", "describe the scene for me",
                 "Could you tell me what's shown here?", "Tell me what you see.", "What's drawn here?"],
}


def phrasings_grammar():
    """--grammar-phrasings: PHRASINGS_EXTRA, and for English also training/grammar.py's wordings (none close to a
    wording of either English held-out set). English "describe" loses "What is it?": a frame no other kind can have
    without coming close to a held-out wording ("What colour is it?"), which the model read every such question as."""
    from training import grammar
    held = [w for kind in OPEN_KINDS for w in HELDOUT_PHRASINGS["en"][kind] + HELDOUT_ENGLISH_2[kind]]
    out = {lang: dict(kinds) for lang, kinds in PHRASINGS_EXTRA.items()}
    for kind in OPEN_KINDS:
        hand = [w for w in PHRASINGS_EXTRA["en"][kind] if w != "What is it?"]
        out["en"][kind] = hand + [w for w in grammar.english_wordings(kind, held) if w not in hand]
    return out
