"""Synthetic multilingual visual questions for the shipped tiny Parrot (numpy + Pillow only, fixed seeds).

A scene is 1-4 objects of one shape and one colour (sizes and positions vary) on a varied background, drawn on a
canvas of random size and aspect ratio, so the SPEC preprocessing (pad to square, bicubic resize) is exercised.
Questions ask for the colour, the shape or the count, in six languages, either open (answer = one word in the
question's language) or MMMB-style multiple choice (options A-D, the language's instruction, answer = a letter).
"""
import base64
import io
import math

import numpy as np
from PIL import Image, ImageDraw

from parrot.demo import COLOUR_RGB, COLOURS, COUNTS, KINDS, LANGS, QUESTIONS, SHAPES, WORDS  # noqa: E402,F401
# ^ the shipped model's world (colours, shapes, counts, their words and the questions in six languages) is
#   defined once, in the package, where `parrot demo` asks about it

MMMB_FILE_CODE = {"en": "en", "zh": "cn", "pt": "pt", "ar": "ar", "tr": "tr", "ru": "ru"}  # MMMB names zh "cn"

# neutral or pastel backgrounds, far from every object colour
BACKGROUNDS = [(245, 245, 245), (200, 200, 200), (235, 225, 200), (215, 230, 245), (60, 60, 60), (20, 20, 20),
               (225, 240, 225), (245, 225, 235)]

# SPEC: the MMMB instruction per language, appended after the options with a "\n"
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
def _shape_polygon(shape, cx, cy, r, angle):
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
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
    """SPEC step 1 (image_aspect_ratio 'pad' + CLIPImageProcessor): RGB, pad to a square with the mean colour,
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


def open_question(scene, lang, kind):
    """-> (user text, answer text)."""
    return QUESTIONS[lang][kind], WORDS[lang][_truth(scene, kind)]


def mc_question(rng, scene, lang, kind):
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
    question = QUESTIONS[lang][kind]
    return {"question": question, "options": options, "answer": answer,
            "prompt": mmmb_prompt(question, options, lang)}


def mmmb_prompt(question, options, lang, hint=""):
    """SPEC: hint + "\\n" (if any) + question, "\\n{L}. {option}" per non-empty option, "\\n" + instruction."""
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
