"""Does a model count the demo's pictures wherever its objects fall against the patch grid?

    python -m training.demo_sweep --gguf MODEL.gguf          # the C engine, asked in English
    python -m training.demo_sweep --tower CKPT [CKPT ...]    # the frozen vision tower alone

`parrot demo`'s three-object pictures (parrot.demo.draw_scene, its dark background (60, 60, 60)) are drawn again on
canvases 84-114 px wide (steps of 2, height 84; the demo's own picture is 96 wide). Preprocessing pads the canvas to
a square and resizes it, so each width puts the objects elsewhere against the tower's patch grid (12-px patches of
the 96-px input for the people runs). Runs 7-8 counted the demo's green triangles "four" at widths 94-106 only
(training/README.md, runs 8-9).

--gguf: the model's answer to the English count question, per shape (green) and width.
--tower: stage 0's count head fitted again on the frozen tower's pooled features (softmax regression as in
training.tower_probe; 2000 people-data and 1000 first-generator pictures, seed 11), then its count for each shape in
each of the six colours and each width: how much of the decoder's miscount is already in the tower.
"""
import argparse

import numpy as np

from parrot.demo import COLOURS, QUESTIONS, DemoScene, draw_scene

WIDTHS = list(range(84, 116, 2))
SHAPES = ["triangle", "square", "circle", "star"]


def scene(shape, colour="green"):
    return DemoScene(shape, colour, 3, (60, 60, 60), "count", "shape", [], "colour")


def engine_sweep(path):
    import parrot
    model = parrot.load(path, threads=1)
    q = QUESTIONS["en"]["count"]
    print("width   ", " ".join(f"{w:>5}" for w in WIDTHS))
    for shape in SHAPES:
        ans = [model.run(draw_scene(scene(shape), width=w, height=84), q, max_new_tokens=4).text for w in WIDTHS]
        print(f"{shape:8}", " ".join(f"{a[:5]:>5}" for a in ans), f"  three {sum(a == 'three' for a in ans)}/{len(ans)}")


def tower_sweep(ckpts):
    import torch
    from PIL import Image

    from training import data
    from training.modeling_parrot import ParrotQwen2ForCausalLM
    from training.tower_probe import fit_softmax, pooled_features
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(11)
    pixels, counts = [], []
    for i in range(3000):
        s = data.random_scene_people(rng) if i < 2000 else data.random_scene(rng)
        pixels.append(data.normalise(data.preprocess(s.pop("image"), 96)))
        counts.append(data.COUNTS.index(s["count"]))
    fit, counts = torch.from_numpy(np.stack(pixels)), np.array(counts)
    sweep = {(shape, colour): torch.from_numpy(np.stack([data.normalise(data.preprocess(
        Image.fromarray(draw_scene(scene(shape, colour), width=w, height=84)), 96)) for w in WIDTHS]))
        for shape in SHAPES for colour in COLOURS}
    for ckpt in ckpts:
        model = ParrotQwen2ForCausalLM.from_pretrained(ckpt).eval()
        if model.vision_config.image_size != 96:
            raise SystemExit(f"{ckpt}: a 96-px tower is expected")
        predict = fit_softmax(pooled_features(model, fit), counts, len(data.COUNTS))
        print(ckpt)
        total = 0
        for shape in SHAPES:
            rows = {c: [data.COUNTS[i] for i in predict(pooled_features(model, sweep[shape, c]))] for c in COLOURS}
            right = sum(n == 3 for r in rows.values() for n in r)
            total += right
            print(f"  {shape:8} green: {' '.join(map(str, rows['green']))}   all six colours: 3 in "
                  f"{right}/{len(COLOURS) * len(WIDTHS)}")
        print(f"  total 3 in {total}/{len(SHAPES) * len(COLOURS) * len(WIDTHS)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="a parrot .gguf model: its answers")
    ap.add_argument("--tower", nargs="+", help="checkpoints (96-px towers): the tower alone")
    args = ap.parse_args()
    if args.gguf:
        engine_sweep(args.gguf)
    if args.tower:
        tower_sweep(args.tower)


if __name__ == "__main__":
    main()
