"""English training wordings made by a small grammar (train.py --grammar-phrasings).

The hand-written wordings give each kind a few dozen sentences, and the model learnt their frames rather than
their key word: a frame that only one kind used ("What is it?", a request for a description) captured every
question of that shape ("What colour is it?" came back as "one red circle"). Here every frame is shared by the
kinds it makes sense for, with every subject (it / this / that / they / these / those / the shape(s) / object(s) /
figure(s) / thing(s), in the picture or not), possessive (its / their) and politeness wrapper, so that in every
frame only the key word (colour / shape / how many / describe) tells the kinds apart.

Held-out wordings stay unseen: every generated wording within difflib ratio 0.85 of a held-out wording (the
rule of data.EXTRA_PHRASINGS; on lower-cased text with punctuation as spaces and "colour" spelt "color") is left
out, whichever kind either belongs to (tests/test_shipped_model.py checks both held-out sets).
"""
import difflib
import re

import numpy as np

SINGULAR = ["it", "this", "that", "this one", "the shape", "the object", "the figure", "the thing",
            "the shape in the picture", "the thing in the image", "the object in this picture"]
PLURAL = ["they", "these", "those", "the shapes", "the objects", "the figures", "the things",
          "the shapes in the picture", "the things in the image", "the objects in this picture"]
PLACES = ["the picture", "the image", "this picture", "this image", "the drawing", "it", "this"]
COUNTABLE = ["shapes", "objects", "figures", "things", "items"]

# {k}: the key noun (colour / color / shape); {s}: a subject, singular or plural with its verb; {p}: its / their
NOUN_FRAMES = [
    "what {k} {be} {s}", "which {k} {be} {s}", "what is the {k} of {s}", "what's the {k} of {s}",
    "tell me the {k} of {s}", "tell me {p} {k}", "what {k} {do} {s} have", "the {k} of {s}", "{k} of {s}",
    "name the {k} of {s}", "say what {k} {s} {be}", "what {k} would you say {s} {be}", "i want to know {p} {k}",
    "do you know what {k} {s} {be}", "can you tell me what {k} {s} {be}", "what {k} do you see",
    "what {k} can you see in {place}", "which {k} is in {place}", "{p} {k}", "what's {p} {k}", "and the {k}",
]
COUNT_FRAMES = [
    "how many {n} are there", "how many {n} are in {place}", "how many {n} do you see",
    "how many {n} can you see in {place}", "how many are there", "how many of them are there",
    "what is the number of {n}", "what's the number of {n} in {place}", "tell me the number of {n}",
    "tell me how many {n} there are", "count the {n}", "count them", "count the {n} in {place}", "the number of {n}",
    "number of {n}", "how many {n} would you say there are", "i want to know how many {n} there are",
    "do you know how many {n} there are", "can you tell me how many {n} there are", "how many", "and how many",
]
DESCRIBE_FRAMES = [
    "describe {place}", "give me a description of {place}", "tell me what is in {place}", "what is in {place}",
    "what's in {place}", "what do you see in {place}", "what can you see", "what does {place} show",
    # the frames the other kinds have, without their key word (run 13b read "what can you see in ..." as a count)
    "what can you see in {place}", "what do you see", "can you tell me what is in {place}",
    "tell me what there is in {place}",
    "tell me what you see", "what is shown in {place}", "what is going on in {place}", "say what {place} shows",
    "i want to know what is in {place}", "do you know what is in {place}", "can you describe {place}",
    "a description of {place}", "and what's in {place}",
]
# (prefix, suffix) around a question; imperatives and noun phrases get "." or nothing, questions "?" or nothing
WRAPPERS = [("", ""), ("please, ", ""), ("", ", please"), ("", " please"), ("hey, ", ""), ("quick question: ", ""),
            ("so ", ""), ("ok, ", ""), ("could you tell me: ", ""), ("", " for me")]
QUESTION_STARTS = ("what", "which", "how", "do ", "can ", "and ", "could ")


def _subjects():
    for s in SINGULAR:
        yield s, "is", "does", "its"
    for s in PLURAL:
        yield s, "are", "do", "their"


def _cores(kind, rng):
    if kind in ("colour", "shape"):
        nouns = ["colour", "color"] if kind == "colour" else ["shape"]
        for frame in NOUN_FRAMES:
            for s, be, do, p in _subjects():
                for k in nouns:
                    yield frame.format(k=k, s=s, be=be, do=do, p=p, place=PLACES[rng.integers(len(PLACES))])
    elif kind == "count":
        for frame in COUNT_FRAMES:
            for n in COUNTABLE:
                for place in PLACES:
                    yield frame.format(n=n, place=place)
    else:
        for frame in DESCRIBE_FRAMES:
            for place in PLACES:
                yield frame.format(place=place)


def _normalised(text):
    return re.sub(r"[\W_]+", " ", text.lower()).strip().replace("colour", "color")


def close_to(wording, others, limit=0.85):
    """Whether `wording` is within difflib ratio `limit` of any of `others` (normalised as above)."""
    w = _normalised(wording)
    return any(difflib.SequenceMatcher(None, w, _normalised(o)).ratio() >= limit for o in others)


def english_wordings(kind, held_out, per_kind=600, seed=0):
    """Up to `per_kind` distinct wordings of `kind` ("colour", "shape", "count", "describe"), none close to any of
    `held_out` (a list of wordings of every kind). Deterministic in `seed`."""
    rng = np.random.default_rng([seed, ["colour", "shape", "count", "describe"].index(kind)])
    cores = list(dict.fromkeys(_cores(kind, rng)))
    out, seen = [], set()
    for i in rng.permutation(len(cores)):
        core = cores[i]
        if core.count("shape") > 1:  # "the shape of the shape"
            continue
        asks = core.startswith(QUESTION_STARTS) and not core.startswith(("and the", "and how many"))
        prefix, suffix = WRAPPERS[rng.integers(len(WRAPPERS))]
        if (prefix.startswith("could you") and not asks) or (suffix == " for me" and asks):
            prefix, suffix = "", ""
        text = prefix + core + suffix
        mark = ("?" if asks else ".") if rng.random() < 0.6 else ""
        text = text + mark
        if rng.random() < 0.7:
            text = text[0].upper() + text[1:]
        text = re.sub(r"\bi want\b", "I want", text)
        key = _normalised(text)
        if key in seen or close_to(text, held_out):
            continue
        seen.add(key)
        out.append(text)
        if len(out) == per_kind:
            break
    return out
