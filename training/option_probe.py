"""Has a checkpoint's multiple-choice circuit formed its first step for each question kind?

    python -m training.option_probe --ckpt DIR [--scenes 300]

Multiple choice works in two steps (train.py's OPTION_LAYER): each option word checks itself against the image,
then the answer copies the letter of the option that matched. This measures the first step: the hidden state
after decoder layer OPTION_LAYER at the last token of every option word, on multiple-choice prompts about new
people-data pictures (the training wordings, all six languages), and a linear probe fitted on half of them to
tell the right option from the others; printed is its balanced accuracy on the other half, per kind (0.5: the
layer does not know which option is right; run 3's colour 0.49, against 0.99 in run 2; training/README.md).
"""
import argparse
import os

import numpy as np
import torch
from tokenizers import Tokenizer

from training import data
from training.modeling_parrot import IMAGE_TOKEN_INDEX, ParrotQwen2ForCausalLM
from training.tokenizer import encode_prompt
from training.train import OPTION_LAYER, Sampler


def fit_probe(x, y, l2=1e-3):
    """Class-balanced logistic regression (L-BFGS) on features x (n, d), labels y (n,) bool -> predict(x) -> bool."""
    x, t = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    pos = t.mean()
    weight = torch.where(t > 0, 0.5 / pos, 0.5 / (1 - pos))  # both classes count alike (1 right option in 2-4)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, t, reduction="none")).mean()
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda z: (torch.as_tensor(z, dtype=torch.float64) @ w + b > 0).detach().numpy()


def balanced_accuracy(pred, y):
    pred, y = np.asarray(pred, bool), np.asarray(y, bool)
    return 0.5 * (pred[y].mean() + (~pred[~y]).mean())


def option_states(model, tok, scenes, seed=3):
    """{kind: (hidden states (n, d) at the last token of every option word, is-right (n,))}."""
    rng = np.random.default_rng(seed)
    find = Sampler(tok, 1, seed, people=True, image_size=model.vision_config.image_size)  # for option_tokens
    out = {kind: ([], []) for kind in data.KINDS}
    with torch.no_grad():
        for i in range(scenes):
            scene = data.random_scene_people(rng)
            pixels = torch.from_numpy(data.normalise(data.preprocess(scene.pop("image"), model.vision_config.image_size)))
            lang = data.LANGS[i % len(data.LANGS)]
            for kind in data.KINDS:
                wordings = data.PHRASINGS[lang][kind]
                q = data.mc_question(rng, scene, lang, kind, wordings[rng.integers(len(wordings))])
                ids = encode_prompt(tok, data.chat_prompt(q["prompt"]))
                embeds, _ = model.prepare_inputs_embeds(ids, pixels)
                hidden = model.model(inputs_embeds=embeds[None], use_cache=False,
                                     output_hidden_states=True).hidden_states[OPTION_LAYER][0]
                n_image = embeds.shape[0] - (len(ids) - 1)  # ids index j > placeholder sits at j - 1 + n_image
                assert ids.index(IMAGE_TOKEN_INDEX) < min(j for j, _ in find.option_tokens(ids))
                for j, letter in find.option_tokens(ids):
                    out[kind][0].append(hidden[j - 1 + n_image].numpy())
                    out[kind][1].append(letter == q["answer"])
    return {k: (np.array(x), np.array(y)) for k, (x, y) in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ParrotQwen2ForCausalLM.from_pretrained(args.ckpt).eval()
    tok = Tokenizer.from_file(os.path.join(args.ckpt, "tokenizer.json"))
    for kind, (x, y) in option_states(model, tok, args.scenes).items():
        half = len(x) // 2
        acc = balanced_accuracy(fit_probe(x[:half], y[:half])(x[half:]), y[half:])
        print(f"{kind:6s} right-option probe at layer {OPTION_LAYER}: balanced accuracy {acc:.3f} ({len(x)} option words)")


if __name__ == "__main__":
    main()
