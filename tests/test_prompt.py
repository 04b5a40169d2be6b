"""Parrot's prompt format against a re-implementation of the reference QwenConversationFormatter
(AIDC-AI/Parrot, parrot/model/conversation_formatter.py) running on the Hugging Face tokenizer."""
import pytest

from parrot.prompt import (DEFAULT_SYSTEM, IMAGE_TOKEN, format_conversation, format_query, tokenize_prompt,
                           user_query)
from parrot.tokenizer import Tokenizer as ParrotTokenizer
from test_tokenizer import qwen2_like_tokenizer, write_gguf


class ReferenceFormatter:
    """The reference formatter's format(), with the HF tokenizer called as the reference calls it
    (tokenizer(chunk, add_special_tokens=False).input_ids, i.e. special tokens recognised)."""

    def __init__(self, hf_tok):
        self.tok = hf_tok
        self.from2role = {"system": "<|im_start|>system\n", "human": "<|im_start|>user\n",
                          "gpt": "<|im_start|>assistant\n"}
        self.im_end = "<|im_end|>"

    def _tokenize_with_image_symbol(self, text):
        chunks = [self.tok.encode(c, add_special_tokens=False).ids for c in text.split("<image>")]
        ids = []
        for i, c in enumerate(chunks):
            ids.extend(c)
            if i < len(chunks) - 1:
                ids.append(-200)
        return ids

    def format(self, conversations, generation_preface=None):
        if conversations[0]["from"] != "system":
            conversations.insert(0, {"from": "system", "value": "You are a helpful assistant."})
        if generation_preface is not None:
            conversations.append({"from": "gpt", "value": generation_preface})
        prompt, input_ids = "", []
        n = len(conversations)
        for i, conv in enumerate(conversations):
            text = self.from2role[conv["from"]] + conv["value"]
            if i < n - 1 or generation_preface is None:
                text += self.im_end
            if i < n - 1:
                text += "\n"
            prompt += text
            input_ids.extend(self._tokenize_with_image_symbol(text))  # turn by turn, as the reference does
        return prompt, input_ids


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    hf = qwen2_like_tokenizer()
    d = tmp_path_factory.mktemp("prompt")
    hf.save(str(d / "tokenizer.json"))
    return hf, ParrotTokenizer(write_gguf(d / "t.gguf", str(d)))


QUESTIONS = [
    "What is shown in the image?\nA. A parrot\nB. A dog\nC. A cat\nD. A car\n"
    "Answer with the option's letter from the given choices directly.",
    "图片中显示的是什么？\nA. 鹦鹉\nB. 狗\n请直接用给定选项中的选项字母回答。",
    "O que a imagem mostra?\nA. Um papagaio\nB. Um cão\nResponda diretamente com a letra da opção das escolhas dadas.",
    "ماذا تظهر الصورة؟\nA. ببغاء\nB. كلب\nأجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
    "Görüntüde ne var?\nA. Papağan\nB. Köpek\nVerilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
    "Что изображено?\nA. Попугай\nB. Собака\nОтветьте буквой варианта из предложенных вариантов напрямую.",
    "  leading and trailing spaces  ",
    "",
    "two images <image> in one <image> turn",
    "ends with a newline\n",
]


def test_spec_example_literally():
    assert format_query("Describe it.") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nDescribe it."
        "<|im_end|>\n<|im_start|>assistant\n")
    assert DEFAULT_SYSTEM == "You are a helpful assistant." and IMAGE_TOKEN == -200
    assert user_query("hi") == "<image>\nhi" and user_query("hi", image=False) == "hi"


@pytest.mark.parametrize("q", QUESTIONS)
def test_single_query_matches_reference(toks, q):
    hf, ours = toks
    ref_prompt, ref_ids = ReferenceFormatter(hf).format([{"from": "human", "value": "<image>\n" + q}],
                                                        generation_preface="")
    prompt = format_query(q)
    assert prompt == ref_prompt
    assert tokenize_prompt(ours, prompt) == ref_ids
    assert ref_ids.count(IMAGE_TOKEN) == prompt.count("<image>")


def test_multi_turn_and_system_override(toks):
    hf, ours = toks
    history = [("<image>\nWhat bird is this?", "It is a parrot."),
               ("Which colour?", "Green, with a red head."),
               ("Где он живёт?", None)]
    for system in (DEFAULT_SYSTEM, "Você é um assistente útil.", ""):
        conv = [{"from": "system", "value": system}]
        for u, a in history:
            conv.append({"from": "human", "value": u})
            if a is not None:
                conv.append({"from": "gpt", "value": a})
        ref_prompt, ref_ids = ReferenceFormatter(hf).format(conv, generation_preface="")
        prompt = format_conversation(history, system=system)
        assert prompt == ref_prompt
        assert tokenize_prompt(ours, prompt) == ref_ids
    # a closed conversation (every turn answered) is the reference's format without a generation preface
    closed = history[:2]
    conv = [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in
            enumerate(x for pair in closed for x in pair)]
    ref_prompt, ref_ids = ReferenceFormatter(hf).format(conv, generation_preface=None)
    assert format_conversation(closed) == ref_prompt
    assert tokenize_prompt(ours, ref_prompt) == ref_ids


def test_prompt_without_image(toks):
    hf, ours = toks
    ref_prompt, ref_ids = ReferenceFormatter(hf).format([{"from": "human", "value": "Hello!"}], "")
    assert format_query("Hello!", image=False) == ref_prompt
    assert tokenize_prompt(ours, ref_prompt) == ref_ids
    assert IMAGE_TOKEN not in ref_ids


def test_bad_conversations():
    with pytest.raises(ValueError):
        format_conversation([])
    with pytest.raises(ValueError, match="not the last"):
        format_conversation([("a", None), ("b", None)])
    with pytest.raises(TypeError):
        format_conversation([("a", 3)])
    with pytest.raises(TypeError):
        format_conversation(("a", None))


def test_chat_pieces_equal_format_query():
    from parrot.chat import system_turn, user_turn
    for image in (True, False):
        assert system_turn("S") + user_turn("q ü", image=image) == format_query("q ü", image=image, system="S")
