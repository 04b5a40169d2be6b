"""Model.create_chat_completion against the torch reference Parrot (training/modeling_parrot.py).

The reference runs a whole conversation at every turn: the prompt text (ChatML, tokenised by Hugging Face
``tokenizers`` chunk by chunk around ``<image>``), the MoE routed on every text token of it, greedy decoding
re-running the sequence. ``routing="first_turn"`` is checked against the same reference with the image rows
routed on the conversation up to the image's message, as a KV-reusing chat session keeps them."""
import base64
import io

import numpy as np
import pytest
import torch

import parrot
from parrot.openai_api import RequestError
from parrot.prompt import format_conversation, format_messages, user_query

import tiny_parrot
from test_api import picture, ref_greedy, stop_ids
from training.modeling_parrot import IMAGE_TOKEN_INDEX

torch.set_num_threads(1)
SYSTEM = "You are a helpful assistant."
N = 10  # answer length: long enough to show divergence, short enough to stay fast


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ref, tok, path = tiny_parrot.build(tmp_path_factory.mktemp("tiny-chat"), seed=3)
    return ref, tok, parrot.load(path, threads=1)


def data_uri(rgb):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_part(rgb):
    return {"type": "image_url", "image_url": {"url": data_uri(rgb)}}


def ref_text(turns, system=SYSTEM):
    """The reference conversation text, written out by hand: ChatML messages joined by newlines."""
    parts = [f"<|im_start|>system\n{system}<|im_end|>"] + [f"<|im_start|>{r}\n{t}<|im_end|>" for r, t in turns]
    return "\n".join(parts) + "\n<|im_start|>assistant\n"


def ref_answer(ref, tok, embeds):
    """The reference's greedy answer (test_api's loop, re-running the sequence each step): ids and text."""
    out, _ = ref_greedy(ref, embeds, N, stop_ids(tok), tok)
    return out, tok.decode(out, skip_special_tokens=True).strip()


def conversation(rgb, follow="Какого цвета круг?"):
    """Three turns: an image question, an answer (given text), a follow-up."""
    return [{"role": "user", "content": [image_part(rgb), {"type": "text", "text": "What colour is the circle?"}]},
            {"role": "assistant", "content": "It is red, I think."},
            {"role": "user", "content": follow}]


def test_format_messages_equals_format_conversation_and_the_hand_written_text():
    turns = [(user_query("Q1", True), "A1"), ("Q2", "A2"), ("Q3", None)]
    flat = [("user", turns[0][0]), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"), ("user", "Q3")]
    assert format_messages(flat, "S") == format_conversation(turns, "S")
    assert str(format_messages(flat, "S")) == ref_text(flat, "S")
    with pytest.raises(ValueError, match="last message"):
        format_messages([("user", "a"), ("assistant", "b")])
    with pytest.raises(ValueError, match="role"):
        format_messages([("tool", "a")])


def test_single_turn_equals_generate_and_reference(tiny):
    ref, tok, model = tiny
    rgb = picture(1)
    for prompt in ("What colour is the circle?", "圆是什么颜色？", "ما لون الدائرة؟"):
        r = model.create_chat_completion([{"role": "user", "content": [image_part(rgb),
                                                                        {"type": "text", "text": prompt}]}],
                                         max_tokens=N, temperature=0)
        ids = tiny_parrot.reference_ids(tok, ref_text([("user", "<image>\n" + prompt)]))
        with torch.no_grad():
            embeds, w = ref.prepare_inputs_embeds(ids, torch.from_numpy(model.preprocess(rgb)))
        want_ids, want_text = ref_answer(ref, tok, embeds)
        assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
        assert r["choices"][0]["message"]["content"] == want_text == model.generate(rgb, prompt, max_new_tokens=N)
        assert r["choices"][0]["finish_reason"] == ("length" if len(want_ids) == N else "stop")
        n_img = model.config["image_tokens"]
        assert r["usage"] == {"prompt_tokens": len(ids) - 1 + n_img, "completion_tokens": len(want_ids),
                              "total_tokens": len(ids) - 1 + n_img + len(want_ids)}
        # routing: a short softmax chain in f32 on both sides
        np.testing.assert_allclose(r["routing"], w.numpy(), atol=1e-5)


def _ref_conversation(ref, tok, model, rgb, msgs, first_turn):
    """Reference answer of the 3-turn conversation, routed on all of it or on its first turn."""
    turns = [("user", "<image>\nWhat colour is the circle?"), ("assistant", msgs[1]["content"]),
             ("user", msgs[2]["content"])]
    ids = tiny_parrot.reference_ids(tok, ref_text(turns))
    px = torch.from_numpy(model.preprocess(rgb))
    with torch.no_grad():
        embeds, w = ref.prepare_inputs_embeds(ids, px)
        if first_turn:
            first = tiny_parrot.reference_ids(tok, ref_text(turns[:1]))
            e1, w = ref.prepare_inputs_embeds(first, px)
            p, n_img = ids.index(IMAGE_TOKEN_INDEX), model.config["image_tokens"]
            embeds = torch.cat([embeds[:p], e1[p:p + n_img], embeds[p + n_img:]])
    return ref_answer(ref, tok, embeds), w.numpy()


@pytest.mark.parametrize("mode", ["exact", "first_turn"])
def test_multi_turn_routing_modes_equal_reference(tiny, mode):
    ref, tok, model = tiny
    rgb = picture(2)
    msgs = conversation(rgb)
    r = model.create_chat_completion(msgs, max_tokens=N, routing=mode)
    (want_ids, want_text), w = _ref_conversation(ref, tok, model, rgb, msgs, mode == "first_turn")
    assert r["choices"][0]["message"]["content"] == want_text
    assert r["usage"]["completion_tokens"] == len(want_ids)
    np.testing.assert_allclose(r["routing"], w, atol=1e-5)


def test_exact_routing_follows_the_whole_conversation(tiny):
    """The two modes differ (the test above would not tell them apart otherwise): exact routing changes with
    the follow-up's text, first-turn routing does not."""
    _, _, model = tiny
    rgb = picture(2)
    a = model.create_chat_completion(conversation(rgb, "Какого цвета круг?"), max_tokens=1)["routing"]
    b = model.create_chat_completion(conversation(rgb, "圆是什么颜色？ 圆是红色的。"), max_tokens=1)["routing"]
    assert np.abs(np.subtract(a, b)).max() > 1e-4
    fa = model.create_chat_completion(conversation(rgb, "Какого цвета круг?"), max_tokens=1, routing="first_turn")
    fb = model.create_chat_completion(conversation(rgb, "圆是什么颜色？ 圆是红色的。"), max_tokens=1,
                                      routing="first_turn")
    assert fa["routing"] == fb["routing"]
    # first-turn routing is what a one-question prompt routes on, i.e. a ChatSession's cached image rows
    chat = model.chat(rgb)
    chat.ask("What colour is the circle?", max_new_tokens=1)
    np.testing.assert_allclose(fa["routing"], chat.routing, atol=1e-6)


def test_stream_chunks_join_to_the_completion(tiny):
    _, _, model = tiny
    msgs = conversation(picture(4))
    whole = model.create_chat_completion(msgs, max_tokens=N, seed=5, temperature=0.9, top_p=0.9)
    chunks = list(model.create_chat_completion(msgs, stream=True, max_tokens=N, seed=5, temperature=0.9, top_p=0.9,
                                               stream_options={"include_usage": True}))
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["routing"] == whole["routing"]   # with the finish reason: known once the prompt ran
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_text_only_and_system_message(tiny):
    _, _, model = tiny
    r = model.create_chat_completion([{"role": "system", "content": "Short answers."},
                                      {"role": "user", "content": [{"type": "text", "text": "Hello"}]}], max_tokens=5)
    assert r["routing"] is None
    assert r["choices"][0]["message"]["content"] == model.generate(None, "Hello", system="Short answers.",
                                                                   max_new_tokens=5)


def test_stop_and_length(tiny):
    _, _, model = tiny
    msgs = [{"role": "user", "content": "Hello"}]
    full = model.create_chat_completion(msgs, max_tokens=N)["choices"][0]["message"]["content"]
    cut = full[len(full) // 2:][:2]
    r = model.create_chat_completion(msgs, max_tokens=N, stop=cut)["choices"][0]
    assert r["message"]["content"] == full[:full.index(cut)].strip() and r["finish_reason"] == "stop"
    r = model.create_chat_completion(msgs, max_completion_tokens=1)
    assert r["usage"]["completion_tokens"] == 1 and r["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("params, match", [
    ({"n": 2}, "n must be 1"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"bogus": 1}, "unsupported parameter 'bogus'"),
    ({"routing": "sometimes"}, "routing"),
])
def test_bad_parameters(tiny, params, match):
    with pytest.raises(RequestError, match=match) as e:
        tiny[2].create_chat_completion([{"role": "user", "content": "Hi"}], **params)
    assert e.value.param is not None


def test_bad_messages(tiny):
    model = tiny[2]
    rgb = picture(5)
    two = [{"role": "user", "content": [image_part(rgb), {"type": "text", "text": "a"}]},
           {"role": "assistant", "content": "b"},
           {"role": "user", "content": [image_part(rgb), {"type": "text", "text": "c"}]}]
    cases = [
        (two, "one image per conversation"),
        ([{"role": "user", "content": [image_part(rgb), image_part(rgb)]}], "one image per conversation"),
        ([{"role": "assistant", "content": "x"}], "last message"),
        ([{"role": "user", "content": "a \ud800"}], "not valid Unicode"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "user", "content": "y"}],
         "system message must come first"),
        ([{"role": "tool", "content": "x"}], "role"),
        ([{"role": "user", "content": 5}], "content"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "type"),
        ([{"role": "user", "content": "look: <image>"}], "<image>"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}],
         "base64"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()}}]}], "image"),
        ([], "messages"),
    ]
    for msgs, match in cases:
        with pytest.raises(RequestError, match=match):
            model.create_chat_completion(msgs, max_tokens=2)
    # the second image is refused before it is read, naming the message that brought the first
    read = []
    with pytest.raises(RequestError, match=r"messages\[3\].*messages\[1\] already has one"):
        model.create_chat_completion([{"role": "system", "content": "s"}] + two, max_tokens=2,
                                     load_image=lambda url: read.append(url) or rgb)
    assert len(read) == 1


def test_prompt_too_long(tiny):
    model = tiny[2]
    C = model.context_size
    with pytest.raises(RequestError, match=f"context is {C}") as e:
        model.create_chat_completion([{"role": "user", "content": [image_part(picture(6)),
                                                                   {"type": "text", "text": "7" * C}]}])
    assert e.value.code == "context_length_exceeded"


def test_llama_cpp_python_style_call(tiny):
    """The keywords llama-cpp-python code passes (repeat_penalty, top_k, neutral min_p / typical_p /
    penalties) mean what they mean there: the answer equals Model.generate's with the same options."""
    _, _, model = tiny
    rgb = picture(7)
    r = model.create_chat_completion(
        [{"role": "user", "content": [image_part(rgb), {"type": "text", "text": "Describe."}]}], max_tokens=N,
        temperature=0, top_k=40, repeat_penalty=1.3, min_p=0.0, typical_p=1.0, presence_penalty=0.0,
        frequency_penalty=0.0)
    want = model.generate(rgb, "Describe.", max_new_tokens=N, top_k=40, repetition_penalty=1.3)
    assert r["choices"][0]["message"]["content"] == want
    assert want != model.generate(rgb, "Describe.", max_new_tokens=N)  # the penalty changed the answer
