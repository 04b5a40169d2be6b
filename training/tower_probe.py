"""How well does a checkpoint's (frozen) vision tower tell colour, shape and count on pictures drawn differently?

    python -m training.tower_probe --ckpt DIR [DIR ...] [--fit 3000]

Stage 0 (train.py) trains the tower with linear heads on the tower's pooled features (CLS row and mean patch row
of layer `mm_vision_select_layer`) and throws the heads away. This fits such heads again on the frozen features:
a softmax regression per kind on `--fit` new pictures of the people-data generator (training/data.py), scored on
- `--heldout` (1000) more pictures of that generator (how well it is learnt where it was trained),
- as many pictures of the first generator (the shipped data's, the kind `parrot demo` shows),
- 384 pictures of the second renderer (tests/people_pictures.py, written apart from training/data.py; seed 7, not
  the people tests' seed), the pictures the people tests ask about.
Printed: accuracy per kind and set (chance: colour 1/6, shape 1/4, count 1/4), and the share of the fitting
pictures' feature variance that lies between the kind's class means. Used to compare tower options
without a full run (training/README.md, run 6).
"""
import argparse
import os
import sys

import numpy as np
import torch

from training import data
from training.modeling_parrot import ParrotQwen2ForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import people_pictures  # noqa: E402

KINDS = {"colour": data.COLOURS, "shape": data.SHAPES, "count": data.COUNTS}


def picture_sets(image_size, fit, heldout=1000, seed=11):
    """{name: (pixels (n, 3, S, S) normalised, {kind: labels (n,)})}."""
    rng = np.random.default_rng(seed)
    sets = {}

    def pack(scenes):  # scenes: [(PIL image, dict with colour/shape/count)]
        pixels = np.stack([data.normalise(data.preprocess(img, image_size)) for img, _ in scenes])
        labels = {k: np.array([list(values).index(truth[k]) for _, truth in scenes]) for k, values in KINDS.items()}
        return torch.from_numpy(pixels), labels

    def people(n):
        out = []
        for _ in range(n):
            s = data.random_scene_people(rng)
            out.append((s.pop("image"), s))
        return out

    sets["fit"] = pack(people(fit))
    sets["people-data"] = pack(people(heldout))
    first = []
    for _ in range(heldout):
        s = data.random_scene(rng)
        first.append((s.pop("image"), s))
    sets["first-generator"] = pack(first)
    sets["second-renderer"] = pack(people_pictures.scenes(384, 7))
    return sets


def pooled_features(model, pixels, batch=256):
    """cat(CLS row, mean patch row) of the selected layer, as stage 0's heads see it."""
    tower = model.model.vision_tower.vision_tower.vision_model
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            h = tower(pixel_values=pixels[i:i + batch], output_hidden_states=True).hidden_states[
                model.config.mm_vision_select_layer]
            out.append(torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1))
    return torch.cat(out).double()


def fit_softmax(x, y, classes, l2=1e-3):
    """Softmax regression (L-BFGS) on standardised features -> predict(x) -> class indices."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    t = torch.as_tensor(y)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, t) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda q: (((q - mu) / sd) @ w + b).argmax(-1).detach().numpy()


def between_class_share(x, y):
    """Share of the (standardised) features' total variance that lies between the class means of labels y: how
    much of what the tower passes on is about this kind (0: nothing, 1: nothing else)."""
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.as_tensor(y)
    between = sum(float((y == c).sum()) * float((z[y == c].mean(0) ** 2).sum()) for c in y.unique())
    return between / float((z ** 2).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", nargs="+", required=True)
    ap.add_argument("--fit", type=int, default=3000)
    ap.add_argument("--heldout", type=int, default=1000, help="pictures of each generator to score on")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sets, size = None, None
    for ckpt in args.ckpt:
        model = ParrotQwen2ForCausalLM.from_pretrained(ckpt).eval()
        if sets is None or model.vision_config.image_size != size:
            size = model.vision_config.image_size
            sets = picture_sets(size, args.fit, args.heldout)
        feats = {name: pooled_features(model, pixels) for name, (pixels, _) in sets.items()}
        print(ckpt)
        for kind, values in KINDS.items():
            predict = fit_softmax(feats["fit"], sets["fit"][1][kind], len(values))
            accs = {name: float((predict(feats[name]) == labels[kind]).mean())
                    for name, (_, labels) in sets.items() if name != "fit"}
            share = between_class_share(feats["fit"], sets["fit"][1][kind])
            print(f"  {kind:6s} " + "  ".join(f"{name} {a:.3f}" for name, a in accs.items())
                  + f"  variance share {share:.3f}", flush=True)


if __name__ == "__main__":
    main()
