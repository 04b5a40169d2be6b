"""Write the held-out set as MMMB-format TSV files, one per language:

    python -m training.make_heldout --out DIR [--scenes 110] [--seed 2024] [--data people]

DIR/mmmb_tiny_{en,cn,pt,ar,tr,ru}.tsv: multiple choice, columns of docs/model.md §11 (index, question, A, B, C, D, answer,
category, l2-category, hint, image). Each scene is asked about three times (colour, shape, count); the 2nd and 3rd
rows carry the index of the 1st instead of the image (MMMB's shared-image convention). All six files use the same
scenes, options and answer letters (translations of one another, as in MMMB).
DIR/open_tiny_{...}.tsv: the same scenes with open questions (index, question, answer, category, image), answer =
one word in the question's language.
The scenes come from a seed disjoint from training's (train.py uses seeds 0-300).
--data people: the scenes of training/data.py's "people" data, images as JPEG (noisy 320 px PNGs exceed csv's
default field limit; MMMB's TSVs hold JPEGs too); the questions stay the QUESTIONS wordings.
"""
import argparse
import csv
import os

import numpy as np

from training import data

MC_COLUMNS = ["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "hint", "image"]
OPEN_COLUMNS = ["index", "question", "answer", "category", "image"]


def heldout_scenes(n_scenes, seed, people=False):
    rng = np.random.default_rng(seed)
    return [(data.random_scene_people if people else data.random_scene)(rng) for _ in range(n_scenes)]


def heldout_rows(scenes, lang, seed, people=False):
    """-> (mc rows, open rows) as dicts; images as base64 PNG, JPEG for people (or the sharing row's index)."""
    mc_rows, open_rows = [], []
    for s, scene in enumerate(scenes):
        image = (data.jpeg_base64 if people else data.png_base64)(scene["image"])
        for k, kind in enumerate(data.KINDS):
            index = s * len(data.KINDS) + k
            img_field = image if k == 0 else str(s * len(data.KINDS))
            # option order depends on (seed, row) only, so every language gets the same letters
            q = data.mc_question(np.random.default_rng([seed, index]), scene, lang, kind)
            mc_rows.append({"index": index, "question": q["question"], **q["options"], "answer": q["answer"],
                            "category": kind, "l2-category": "perception", "hint": "", "image": img_field})
            question, answer = data.open_question(scene, lang, kind)
            open_rows.append({"index": index, "question": question, "answer": answer, "category": kind,
                              "image": img_field})
    return mc_rows, open_rows


def write_tsv(path, columns, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_heldout(out_dir, n_scenes=110, seed=2024, people=False):
    os.makedirs(out_dir, exist_ok=True)
    scenes = heldout_scenes(n_scenes, seed, people)
    paths = []
    for lang in data.LANGS:
        mc_rows, open_rows = heldout_rows(scenes, lang, seed, people)
        code = data.MMMB_FILE_CODE[lang]
        for name, columns, rows in ((f"mmmb_tiny_{code}.tsv", MC_COLUMNS, mc_rows),
                                    (f"open_tiny_{code}.tsv", OPEN_COLUMNS, open_rows)):
            write_tsv(os.path.join(out_dir, name), columns, rows)
            paths.append(os.path.join(out_dir, name))
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scenes", type=int, default=110, help="scenes per language; 3 questions each")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--data", choices=["shapes", "people"], default="shapes", help="whose scenes (train.py --data)")
    args = ap.parse_args()
    for path in write_heldout(args.out, args.scenes, args.seed, args.data == "people"):
        print(path)


if __name__ == "__main__":
    main()
