"""Parity of parrot's C tokenizer with Hugging Face `tokenizers`.

A byte-level BPE is trained here with `tokenizers`, configured exactly as Qwen2's tokenizer.json (NFC, the Split
regex with behaviour Isolated, ByteLevel without prefix space or regex, ByteLevel decoder, the three special
tokens), on a multilingual corpus written below. It is stored in a GGUF file by parrot's converter function
and loaded by the C tokenizer; every test string must then give the same ids as `tokenizers`, and decode to
the same text.
"""
import json
import os
import random
import unicodedata

import gguf
import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from parrot import _core
from parrot._tokenizer_data import QWEN2_PRE_REGEX, add_tokenizer, tokenizer_metadata
from parrot.errors import TokenizerError
from parrot.tokenizer import Tokenizer as ParrotTokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Real text in the six MMMB languages and more scripts, code, URLs, numbers, emoji.
CORPUS = {
    "en": [
        "Parrots are intelligent birds that can learn to imitate human speech.",
        "The quick brown fox jumps over the lazy dog, doesn't it? I'm sure we'll see; they've gone, you'd agree.",
        "What's shown in the image? Answer with the option's letter from the given choices directly.",
        "In 2024, the model scored 70.7% on MMBench and 1,234 of 5,678 questions were answered correctly.",
        "Dr. O'Neill's lab (est. 1999) measured CO2 levels at 415.3 ppm -- a record high!",
        "HELLO WORLD! IT'S A TEST. WE'RE READY, AREN'T WE? THEY'LL SEE. I'VE DONE IT. SHE'D KNOW.",
        "A vision-language model encodes the image with CLIP, projects it, and feeds it to a language model.",
        "Please strictly answer Yes or No. Answer the question using a single word or phrase.",
    ],
    "zh": [
        "鹦鹉是一种聪明的鸟类，能够模仿人类的语言。",
        "请直接用给定选项中的选项字母回答。",
        "图片中显示的是什么？这是一张在北京拍摄的照片，时间是2023年10月1日。",
        "多语言大模型需要在不同语言之间对齐视觉特征，以减少英语偏见。",
        "我们在六种语言上评估了模型的性能：英语、中文、葡萄牙语、阿拉伯语、土耳其语和俄语。",
        "请直接回答选项字母。请用单个词或短语回答问题。",
    ],
    "pt": [
        "Os papagaios são aves inteligentes que conseguem imitar a fala humana.",
        "Responda diretamente com a letra da opção das escolhas dadas.",
        "A imagem mostra uma criança brincando no parque ao pôr do sol, não é?",
        "Ação, coração, informação e educação são palavras com acentuação e cedilha.",
        "Você já visitou São Paulo? A cidade é enorme e tem mais de 12 milhões de habitantes.",
    ],
    "ar": [
        "الببغاوات طيور ذكية يمكنها تقليد كلام الإنسان.",
        "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
        "ماذا تظهر الصورة؟ تظهر الصورة رجلاً يقرأ كتاباً في المكتبة.",
        "يُعَدُّ النموذج متعدد اللغات خطوةً مهمةً نحو ذكاءٍ اصطناعيٍ أكثر عدلاً.",
        "العدد ١٢٣٤٥ مكتوب بالأرقام العربية الشرقية، و٦٧٨٩ أيضاً.",
    ],
    "tr": [
        "Papağanlar insan konuşmasını taklit edebilen zeki kuşlardır.",
        "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
        "Görüntüde ne gösteriliyor? İstanbul'da çekilmiş bir fotoğraf görüyoruz.",
        "Işık, ılık, şişe, çiçek, ğ, ü, ö, İ ve ı harfleri Türkçeye özgüdür.",
        "Bugün hava çok güzel; dışarı çıkıp yürüyüş yapmak istiyorum.",
    ],
    "ru": [
        "Попугаи — умные птицы, которые умеют подражать человеческой речи.",
        "Ответьте буквой варианта из предложенных вариантов напрямую.",
        "Что изображено на картинке? На фотографии видна Красная площадь в Москве.",
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "В 2023 году модель обучили на 1,5 миллиона пар «изображение — текст».",
    ],
    "hi": [
        "तोते बुद्धिमान पक्षी हैं जो मनुष्य की बोली की नकल कर सकते हैं।",
        "चित्र में क्या दिखाया गया है? यह दिल्ली में ली गई एक तस्वीर है।",
        "हिन्दी देवनागरी लिपि में लिखी जाती है और इसमें मात्राएँ, अनुस्वार और विसर्ग होते हैं।",
        "संख्याएँ ०१२३४५६७८९ भी देवनागरी अंकों में लिखी जा सकती हैं।",
    ],
    "th": [
        "นกแก้วเป็นนกที่ฉลาดและสามารถเลียนเสียงพูดของมนุษย์ได้",
        "ภาพนี้แสดงอะไร ภาพนี้ถ่ายที่กรุงเทพมหานครเมื่อปีที่แล้ว",
        "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ และมีวรรณยุกต์ ่ ้ ๊ ๋",
        "ตัวเลขไทย ๑๒๓๔๕ ก็ใช้ได้เช่นกัน",
    ],
    "ja": [
        "オウムは人間の言葉をまねることができる賢い鳥です。",
        "この画像には何が写っていますか？東京タワーの写真です。",
        "ひらがな、カタカナ、漢字を組み合わせて日本語を書きます。ｶﾀｶﾅの半角もあります。",
        "２０２４年には、ＡＩの研究がさらに進みました。",
    ],
    "ko": [
        "앵무새는 사람의 말을 흉내 낼 수 있는 똑똑한 새입니다.",
        "이 사진에는 무엇이 있습니까? 서울에서 찍은 사진입니다.",
        "한국어는 한글로 쓰며, 자음과 모음을 모아 음절을 만듭니다.",
    ],
    "he": [
        "תוכים הם ציפורים חכמות שיכולות לחקות דיבור אנושי.",
        "מה מוצג בתמונה? זוהי תמונה שצולמה בירושלים.",
        "שָׁלוֹם עֲלֵיכֶם, מָה שְׁלוֹמְךָ הַיּוֹם?",
    ],
    "el": [
        "Οι παπαγάλοι είναι έξυπνα πουλιά που μπορούν να μιμηθούν την ανθρώπινη ομιλία.",
        "Τι δείχνει η εικόνα; Μια φωτογραφία από την Αθήνα.",
        "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.",
    ],
    "code": [
        "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text]  # naive\n",
        "for (int i = 0; i < n; ++i) {\r\n\tsum += a[i] * b[i];\r\n}\r\n",
        "if x != y && z >= 0 || w <= -1: print(f\"{x!r:>10}\")",
        "const url = `https://example.com/api/v1/items?id=${id}&sort=desc`;\n",
        "SELECT name, COUNT(*) FROM users WHERE age > 18 GROUP BY name;",
        "    \n\n\t\t  \r\n   indented    text   with   runs    of spaces  \t\n",
        "<div class=\"row\">\n  <span id='a'>Hello &amp; goodbye</span>\n</div>",
    ],
    "url": [
        "https://github.com/AIDC-AI/Parrot/blob/main/README.md#installation",
        "mailto:someone@example.org?subject=Hello%20World",
        "Visit http://www.example.co.uk/path/to/page.html?q=a+b&lang=pt-BR for details.",
        "ftp://files.example.net/pub/data_2024-01-01.tar.gz",
    ],
    "emoji": [
        "Family: 👨‍👩‍👧‍👦, couple: 👩‍❤️‍👨, thumbs: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
        "Flags 🇧🇷 🇹🇷 🇷🇺 🇸🇦 🇨🇳 🇺🇸 and keycaps 1️⃣ #️⃣ and 🏳️‍🌈",
        "Parrot 🦜 says hi! 😀😃😄😁 ❤️ ☺︎ ✈️",
    ],
}


def _corpus_lines():
    for lines in CORPUS.values():
        yield from lines


def _perturbations(s):
    """Variants of a corpus line that stress the pre-tokeniser and NFC."""
    yield s
    yield unicodedata.normalize("NFD", s)
    yield unicodedata.normalize("NFKD", s)
    yield s.upper()
    yield s.lower()
    yield s.replace(" ", "  ")
    yield s.replace(" ", "\t")
    yield s.replace(" ", "\r\n")
    yield s.replace(" ", " \n ")
    yield s.replace(" ", "\u3000")
    yield s.replace(" ", "\u00a0")
    yield "   " + s + "   "
    yield s + "\n\n"
    yield "'" + s.replace(" ", " '")


def build_test_strings(seed=1234, n_random=3000):
    """At least 10,000 strings: corpus lines and their variants, words, random slices, special tokens inside
    text, numbers, and random Unicode."""
    rng = random.Random(seed)
    lines = list(_corpus_lines())
    text = "\n".join(lines)
    out = []
    for s in lines:
        out.extend(_perturbations(s))
        out.extend(s.split())
    for _ in range(3000):  # random slices, cutting through combining sequences and ZWJ sequences
        a = rng.randrange(len(text))
        out.append(text[a:a + rng.randrange(1, 80)])
    for _ in range(1000):  # special tokens in the middle of text
        parts = [rng.choice(lines)[: rng.randrange(1, 40)] for _ in range(rng.randrange(1, 4))]
        s = ""
        for p in parts:
            s += p + rng.choice(SPECIALS + ["<|im_end", "<|im_start|", "<image>", "<|", "|>"])
        out.append(s)
    for _ in range(1000):  # numbers and digit runs
        out.append(rng.choice(["", "x", " ", "$", "v"]) + str(rng.randrange(10 ** rng.randrange(1, 15)))
                   + rng.choice(["", ".5", ",000", "%", " km", "th", "\n"]))
    contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'lL", "'D", "'ſ", "'x"]
    for _ in range(500):
        out.append(rng.choice(["it", "we", " they", "", " ", "I"]) + rng.choice(contractions)
                   + rng.choice(["", " ", "s", "x", "'", "\n", "ok"]))
    for _ in range(n_random):
        out.append(random_unicode(rng, rng.randrange(1, 30)))
    return out


def random_unicode(rng, n):
    """Random code points: mostly from the BMP, some ASCII and white space, some from the other planes;
    surrogates excluded (they cannot be encoded)."""
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            cp = rng.randrange(0x20, 0x7F)
        elif r < 0.3:
            cp = rng.choice([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2028, 0x2029, 0x202F,
                             0x205F, 0x3000, 0x1C, 0x1F, 0x180E, 0x200B, 0x27, 0x17F])
        elif r < 0.35:
            cp = rng.randrange(0x300, 0x370)  # combining marks
        elif r < 0.85:
            cp = rng.randrange(0, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x110000)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


def qwen2_like_tokenizer(vocab_size=4000):
    """A `tokenizers` BPE with Qwen2's tokenizer.json pipeline, trained on the corpus."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = list(_corpus_lines())
    tok.train_from_iterator([unicodedata.normalize("NFC", s) for s in text] * 3, trainer)
    tok.add_special_tokens(SPECIALS)  # appended after the vocabulary, as in Qwen2
    return tok


def write_gguf(path, hf_dir, n_vocab=None):
    w = gguf.GGUFWriter(str(path), "qwen2")
    add_tokenizer(w, hf_dir, n_vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def write_gguf_meta(path, meta):
    w = gguf.GGUFWriter(str(path), "qwen2")
    for key, value, vtype in meta:
        w.add_key_value(key, value, vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def hf_tok():
    return qwen2_like_tokenizer()


@pytest.fixture(scope="module")
def hf_dir(hf_tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen2tok")
    hf_tok.save(str(d / "tokenizer.json"))
    with open(d / "tokenizer_config.json", "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}, f)
    return d


@pytest.fixture(scope="module")
def ours(hf_dir):
    return ParrotTokenizer(write_gguf(hf_dir / "tok.gguf", str(hf_dir)))


@pytest.fixture(scope="module")
def strings():
    s = build_test_strings()
    assert len(s) >= 10000
    return s


def hf_ids(tok, s):
    return tok.encode(s, add_special_tokens=False).ids


def test_identical_ids_and_round_trip(hf_tok, ours, strings):
    mismatches = []
    for s in strings:
        want = hf_ids(hf_tok, s)
        got = ours.encode(s)
        if got != want:
            mismatches.append((s, want, got))
            continue
        if ours.decode(got) != hf_tok.decode(want, skip_special_tokens=False):
            mismatches.append((s, "decode", ours.decode(got)))
    assert not mismatches, f"{len(mismatches)} of {len(strings)} differ, first: {mismatches[:3]!r}"


def test_round_trip_is_nfc(ours):
    # Decoding gives back the NFC form of the text (special tokens included verbatim).
    for s in _corpus_lines():
        for v in _perturbations(s):
            assert ours.decode(ours.encode(v)) == unicodedata.normalize("NFC", v)
    s = "<|im_start|>user\nCafe\u0301<|im_end|>\n"
    assert ours.decode(ours.encode(s)) == "<|im_start|>user\nCafé<|im_end|>\n"
    assert ours.decode(ours.encode(s), skip_special=True) == "user\nCafé\n"


def test_special_tokens(hf_tok, ours):
    for name in SPECIALS:
        assert ours.token_id(name) == hf_tok.token_to_id(name)
        assert ours.encode(name) == [hf_tok.token_to_id(name)]
    assert ours.token_id("<|not_a_token|>") is None
    assert ours.eos_id == hf_tok.token_to_id("<|im_end|>")
    assert ours.pad_id == hf_tok.token_to_id("<|endoftext|>")
    assert ours.n_tokens == hf_tok.get_vocab_size(with_added_tokens=True)


def test_special_tokens_off(hf_tok, ours, strings):
    # special=False is tokenizers' encode_special_tokens=True: the markers are ordinary text.
    hf_tok.encode_special_tokens = True
    try:
        for s in strings[::7]:
            assert ours.encode(s, special=False) == hf_ids(hf_tok, s), s
        s = "<|im_start|>user<|im_end|>"
        assert ours.encode(s, special=False) == hf_ids(hf_tok, s)
        assert ours.token_id("<|im_start|>") not in ours.encode(s, special=False)
    finally:
        hf_tok.encode_special_tokens = False


def test_skip_special_decode(hf_tok, ours, strings):
    for s in strings[::5]:
        ids = hf_ids(hf_tok, s)
        assert ours.decode(ids, skip_special=True) == hf_tok.decode(ids, skip_special_tokens=True)


def test_random_ids_decode_like_hf(hf_tok, ours):
    # Arbitrary id sequences make broken UTF-8 (half characters, stray continuation bytes): each ill-formed
    # part must become U+FFFD exactly as tokenizers (Rust's from_utf8_lossy) does.
    rng = random.Random(7)
    n = ours.n_tokens
    for _ in range(3000):
        ids = [rng.randrange(n) for _ in range(rng.randrange(0, 12))]
        assert ours.decode(ids) == hf_tok.decode(ids, skip_special_tokens=False), ids
        assert ours.decode(ids, skip_special=True) == hf_tok.decode(ids, skip_special_tokens=True), ids


def test_stream_decoder(hf_tok, ours, strings):
    rng = random.Random(3)
    for s in strings[::4]:
        ids = ours.encode(s)
        full = ours.decode(ids)
        st = ours.stream()
        pieces = [st.push(i) for i in ids]
        tail = st.flush()
        assert "".join(pieces) + tail == full
        if "\ufffd" not in full:  # a well-formed text never shows a replacement character mid-stream
            assert all("\ufffd" not in p for p in pieces)
    # random ids: the stream agrees with the one-shot decoder, also when skipping specials
    for _ in range(1000):
        ids = [rng.randrange(ours.n_tokens) for _ in range(rng.randrange(0, 10))]
        for skip in (False, True):
            st = ours.stream(skip_special=skip)
            assert "".join(st.push(i) for i in ids) + st.flush() == ours.decode(ids, skip_special=skip)


def test_stream_holds_back_partial_characters(ours):
    byte_ids = [ours.token_id(hf_byte_char(b)) for b in "中".encode()]
    st = ours.stream()
    assert [st.push(i) for i in byte_ids] == ["", "", "中"]
    assert st.flush() == ""
    # an unfinished character at the end becomes one U+FFFD, as in the one-shot decoder
    assert st.push(byte_ids[0]) == "" and st.push(byte_ids[1]) == ""
    assert st.flush() == "\ufffd" == ours.decode(byte_ids[:2])
    # a byte that cannot continue the pending sequence releases it as U+FFFD
    assert st.push(byte_ids[0]) == ""
    assert st.push(ours.token_id("a")) == "\ufffda"


def hf_byte_char(b):
    from parrot._tokenizer_data import BYTE_ALPHABET
    return BYTE_ALPHABET[b]


def test_code_point_classes_exhaustive_bmp(hf_tok, ours):
    """Every BMP code point in contexts that exercise each regex alternative (letters, numbers, white space,
    contractions, CR/LF), 512 code points per string."""
    bad = []
    for start in range(0, 0x10000, 512):
        cps = [c for c in range(start, start + 512) if not 0xD800 <= c <= 0xDFFF]
        if not cps:
            continue
        s = "".join(f"a{chr(c)}b {chr(c)}1 '{chr(c)}\n{chr(c)}{chr(c)}  x{chr(c)}\r\n" for c in cps)
        if ours.encode(s) != hf_ids(hf_tok, s):
            bad.append(hex(start))
    assert not bad, f"code point blocks that differ: {bad}"


@pytest.mark.slow
def test_code_point_classes_exhaustive_all_planes(hf_tok, ours):
    bad = []
    for start in range(0x10000, 0x110000, 2048):
        s = "".join(f"a{chr(c)}b {chr(c)}1 '{chr(c)}\n{chr(c)}{chr(c)}  x{chr(c)}\r\n"
                    for c in range(start, start + 2048))
        if ours.encode(s) != hf_ids(hf_tok, s):
            bad.append(hex(start))
    assert not bad, f"code point blocks that differ: {bad}"


def test_long_text_and_long_words(hf_tok, ours):
    text = "\n".join(_corpus_lines()) * 20
    assert ours.encode(text) == hf_ids(hf_tok, text)
    for s in ["a" * 5000, "中" * 3000, " " * 4000 + "x", "1" * 1000, "!?" * 2000, "é" * 100 + "\u0301" * 50]:
        assert ours.encode(s) == hf_ids(hf_tok, s)


def test_added_tokens_normalized_and_not(hf_dir, tmp_path, strings):
    """Non-special added tokens, matched on the raw text (normalized=False) or after NFC (normalized=True)."""
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    tok.add_tokens([AddedToken("<image>", normalized=False), AddedToken("Café", normalized=True),
                    AddedToken("ÅX", normalized=False), AddedToken("<|im", normalized=False, special=False)])
    tok.add_special_tokens([AddedToken("[SEP]", normalized=True, special=True)])
    d = tmp_path / "added"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    ours = ParrotTokenizer(write_gguf(d / "t.gguf", str(d)))
    rng = random.Random(11)
    extra = ["<image>\nWhat is this?", "Cafe\u0301 Café CAFÉ", "A\u030aX ÅX", "x<|im_end|>y<|im", "a[SEP]b",
             "<|im_start|><|im"]
    for s in extra + strings[::10]:
        if rng.random() < 0.5:
            s = s + rng.choice(extra)
        assert ours.encode(s) == hf_ids(tok, s), s
        tok.encode_special_tokens = True
        assert ours.encode(s, special=False) == hf_ids(tok, s), s
        tok.encode_special_tokens = False
        ids = hf_ids(tok, s)
        assert ours.decode(ids) == tok.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids, skip_special=True) == tok.decode(ids, skip_special_tokens=True)


def test_vocab_json_and_merges_txt(hf_tok, hf_dir, tmp_path, strings):
    """The other checkpoint layout: vocab.json + merges.txt + tokenizer_config.json, compared with what
    transformers' Qwen2TokenizerFast builds from the same files."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path / "slow"
    d.mkdir()
    hf_tok.model.save(str(d))
    decoder = {str(hf_tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                             "single_word": False, "special": True} for t in SPECIALS}
    with open(d / "tokenizer_config.json", "w") as f:
        json.dump({"added_tokens_decoder": decoder, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "bos_token": None, "tokenizer_class": "Qwen2Tokenizer"}, f)
    ref = transformers.AutoTokenizer.from_pretrained(str(d))  # builds Qwen2's pipeline from the two files
    ours = ParrotTokenizer(write_gguf(d / "t.gguf", str(d)))
    assert ours.eos_id == ref.eos_token_id and ours.pad_id == ref.pad_token_id
    for s in strings[::10]:
        want = ref(s, add_special_tokens=False).input_ids
        assert ours.encode(s) == want, s
        assert ours.decode(want) == ref.decode(want)


def test_gguf_metadata(hf_tok, hf_dir):
    tj = json.loads(hf_tok.to_str())
    meta = {k: (v, t) for k, v, t in tokenizer_metadata(str(hf_dir), n_vocab=hf_tok.get_vocab_size() + 7)}
    tokens = meta["tokenizer.ggml.tokens"][0]
    types = meta["tokenizer.ggml.token_type"][0]
    vocab = tj["model"]["vocab"]
    assert len(tokens) == len(types) == hf_tok.get_vocab_size() + 7
    for t, i in vocab.items():
        assert tokens[i] == t and types[i] == 1
    for a in tj["added_tokens"]:
        assert tokens[a["id"]] == a["content"] and types[a["id"]] == 3
    assert types[-7:] == [5] * 7
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    assert meta["tokenizer.ggml.merges"][0] == merges
    assert meta["tokenizer.ggml.model"][0] == "gpt2" and meta["tokenizer.ggml.pre"][0] == "qwen2"
    assert meta["parrot.tokenizer.pre_regex"][0] == tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert meta["tokenizer.ggml.eos_token_id"][0] == hf_tok.token_to_id("<|im_end|>")


def test_padded_vocab_decodes_unused_ids_to_nothing(hf_tok, hf_dir, tmp_path):
    n = hf_tok.get_vocab_size()
    ours = ParrotTokenizer(write_gguf(tmp_path / "p.gguf", str(hf_dir), n_vocab=n + 10))
    assert ours.n_tokens == n + 10
    ids = hf_ids(hf_tok, "Hello world")
    assert ours.decode(ids[:1] + [n + 3] + ids[1:]) == "Hello world"
    with pytest.raises(ValueError, match="not a token id"):
        ours.decode([n + 10])
    with pytest.raises(ValueError):
        ours.decode([-1])


def test_invalid_utf8_and_surrogates(hf_tok, ours):
    assert ours.encode("Olá".encode()) == ours.encode("Olá")
    for bad, offset in [(b"abc\xff", 3), (b"\xc3", 0), (b"ok \xed\xa0\x80", 3), (b"\xf4\x90\x80\x80", 0),
                        (b"x\xc0\xaf", 1), (b"\xe4\xb8", 0)]:
        with pytest.raises(TokenizerError, match=f"byte offset {offset}"):
            ours.encode(bad)
    with pytest.raises(UnicodeEncodeError):
        ours.encode("a\ud800b")
    with pytest.raises(Exception):  # tokenizers refuses it too
        hf_tok.encode("a\ud800b")
    assert ours.encode("") == [] and ours.decode([]) == ""
    assert ours.encode("a\0b") == hf_ids(hf_tok, "a\0b")


def _with_field(hf_dir, tmp_path, edit):
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    edit(tj)
    d = tmp_path / "edited"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").write_text(json.dumps(tj))
    return d


def test_unsupported_pipelines_are_refused(hf_dir, tmp_path):
    cases = [
        (lambda tj: tj.__setitem__("normalizer", {"type": "NFKC"}), "normalizer"),
        (lambda tj: tj.__setitem__("normalizer", None), "normalizer"),
        (lambda tj: tj["pre_tokenizer"]["pretokenizers"][0]["pattern"].__setitem__(
            "Regex", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"), "pre_tokenizer"),
        (lambda tj: tj["pre_tokenizer"]["pretokenizers"][0].__setitem__("behavior", "Removed"), "pre_tokenizer"),
        (lambda tj: tj["pre_tokenizer"]["pretokenizers"][1].__setitem__("add_prefix_space", True), "pre_tokenizer"),
        (lambda tj: tj.__setitem__("pre_tokenizer", {"type": "Whitespace"}), "pre_tokenizer"),
        (lambda tj: tj.__setitem__("decoder", {"type": "WordPiece"}), "decoder"),
        (lambda tj: tj["model"].__setitem__("dropout", 0.1), "model.dropout"),
        (lambda tj: tj["model"].__setitem__("type", "Unigram"), "model.type"),
        (lambda tj: tj["added_tokens"][0].__setitem__("lstrip", True), "lstrip"),
        (lambda tj: tj["model"]["merges"].append(["zz", "qq"]), "merges"),
    ]
    for edit, field in cases:
        d = _with_field(hf_dir, tmp_path, edit)
        with pytest.raises(TokenizerError, match=field) as e:
            tokenizer_metadata(str(d))
        assert "tokenizer.json" in str(e.value)


def test_c_refuses_foreign_metadata(hf_dir, tmp_path):
    meta = tokenizer_metadata(str(hf_dir))

    def replaced(key, value):
        return [(k, value if k == key else v, t) for k, v, t in meta]

    gpt2_regex = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    cases = [
        (replaced("parrot.tokenizer.pre_regex", gpt2_regex), "pre-tokeniser regex"),
        (replaced("parrot.tokenizer.normalizer", "NFKC"), "normaliser"),
        (replaced("tokenizer.ggml.model", "llama"), "only 'gpt2'"),
        ([m for m in replaced("tokenizer.ggml.pre", "llama-bpe") if m[0] != "parrot.tokenizer.pre_regex"],
         "pre-tokeniser"),
        ([m for m in meta if m[0] != "tokenizer.ggml.token_type"], "token_type"),
        (replaced("tokenizer.ggml.merges", ["Ġ t", "not_a_token zz"]), "merge 1"),
        (replaced("tokenizer.ggml.eos_token_id", 10 ** 6), "eos_token_id"),
    ]
    for i, (m, msg) in enumerate(cases):
        path = write_gguf_meta(tmp_path / f"bad{i}.gguf", m)
        with pytest.raises(TokenizerError, match=msg):
            ParrotTokenizer(path)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        ParrotTokenizer(write_gguf_meta(tmp_path / "empty.gguf", [("general.name", "x", gguf.GGUFValueType.STRING)]))


def test_core_object_and_threads(ours, hf_tok, strings):
    # The GIL is released for long inputs; concurrent encodes must agree with the single-threaded result.
    from concurrent.futures import ThreadPoolExecutor
    long = ["\n".join(strings[i:i + 400]) for i in range(0, 4000, 400)]
    want = [hf_ids(hf_tok, s) for s in long]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(ours.encode, long * 2))
    assert got == want * 2
    assert isinstance(ours._tok, _core.Tokenizer)
    assert ParrotTokenizer(ours._tok).encode("abc") == ours.encode("abc")
