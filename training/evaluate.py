"""Evaluate a Parrot checkpoint with the torch reference's greedy generate on the held-out TSVs:

    python -m training.evaluate --ckpt training/checkpoint --heldout DIR [--limit N] [--threads 1]

Prints per-language accuracy (multiple choice and open) and the 6x6 matrix of mean routing weights per language.
"""
import argparse
import base64
import csv
import io
import os
import re

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from training import data
from training.modeling_parrot import ParrotQwen2ForCausalLM
from training.tokenizer import encode_prompt


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by_index = {r["index"]: r for r in rows}
    for r in rows:  # MMMB: an image field of at most 64 characters is the index of the row whose image it shares
        if len(r["image"]) <= 64:
            r["image"] = by_index[r["image"]]["image"]
    return rows


def decode_image(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def mc_letter(answer, options):
    """VLMEvalKit's can_infer in short: a sole choice letter as a whole piece, else a sole option text inside."""
    letters = [k for k, v in options.items() if v]
    pieces = re.sub(r"[.()\[\],:;!*#{}]", " ", answer).split()
    found = [l for l in letters if l in pieces]
    if len(found) == 1:
        return found[0]
    found = [l for l in letters if options[l].lower() in answer.lower()]
    return found[0] if len(found) == 1 else None


def answer(model, tok, image, user_text):
    size = model.vision_config.image_size
    pixels = torch.from_numpy(data.normalise(data.preprocess(image, size)))
    ids = encode_prompt(tok, data.chat_prompt(user_text))
    with torch.no_grad():
        _, w = model.prepare_inputs_embeds(ids, pixels)
        stop = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
        out = model.generate(ids, pixels, max_new_tokens=16, eos_token_ids=stop)
    return tok.decode(out, skip_special_tokens=True).strip(), w.numpy()


def evaluate(ckpt, heldout, limit=None, verbose=False):
    model = ParrotQwen2ForCausalLM.from_pretrained(ckpt)
    tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
    results = {}
    for lang in data.LANGS:
        code = data.MMMB_FILE_CODE[lang]
        mc = read_tsv(os.path.join(heldout, f"mmmb_tiny_{code}.tsv"))[:limit]
        op = read_tsv(os.path.join(heldout, f"open_tiny_{code}.tsv"))[:limit]
        mc_right, open_right, weights = 0, 0, []
        by_cat = {}  # (kind, category) -> [right, total]
        for r in mc:
            options = {k: r[k] for k in "ABCD"}
            text, w = answer(model, tok, decode_image(r["image"]), data.mmmb_prompt(r["question"], options, lang))
            weights.append(w)
            ok = mc_letter(text, options) == r["answer"]
            mc_right += ok
            cell = by_cat.setdefault(("mc", r["category"]), [0, 0])
            cell[0], cell[1] = cell[0] + ok, cell[1] + 1
            if verbose and mc_letter(text, options) != r["answer"]:
                print(lang, "MC", r["index"], r["category"], repr(text), "want", r["answer"])
        for r in op:
            text, w = answer(model, tok, decode_image(r["image"]), r["question"])
            weights.append(w)
            ok = text == r["answer"]
            open_right += ok
            cell = by_cat.setdefault(("open", r["category"]), [0, 0])
            cell[0], cell[1] = cell[0] + ok, cell[1] + 1
            if verbose and text != r["answer"]:
                print(lang, "open", r["index"], r["category"], repr(text), "want", r["answer"])
        results[lang] = {"mc": mc_right / len(mc), "open": open_right / len(op), "n_mc": len(mc), "n_open": len(op),
                         "routing": np.mean(weights, axis=0),
                         "by_category": {f"{k}/{c}": right / total for (k, c), (right, total) in sorted(by_cat.items())}}
    return results


def report(results):
    print("lang  n_mc  mc_acc  n_open  open_acc")
    for lang, r in results.items():
        cats = " ".join(f"{k} {v:.2f}" for k, v in r["by_category"].items())
        print(f"{lang:4s} {r['n_mc']:5d}  {r['mc']:.3f}  {r['n_open']:6d}  {r['open']:.3f}   {cats}")
    print("mean routing weights (rows: language, columns: expert 0..5)")
    for lang, r in results.items():
        print(f"{lang:4s} " + " ".join(f"{v:.3f}" for v in r["routing"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint"))
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report(evaluate(args.ckpt, args.heldout, args.limit, args.verbose))


if __name__ == "__main__":
    main()
