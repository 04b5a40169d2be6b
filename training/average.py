"""Average the weights of several checkpoints of one run (stochastic weight averaging: Izmailov et al., "Averaging
Weights Leads to Wider Optima and Better Generalization", 2018).

    python -m training.average --out OUT CKPT [CKPT ...]

The checkpoints must be snapshots of one model on its way through training (train.py --save-every, or runs that
continue one another with --init): the same tokenizer, configuration and tensors. Each weight of OUT is the mean of
theirs, computed in float64 and stored in the checkpoints' dtype; the tokenizer and configuration are copied from
the first. Snapshots taken along one stretch of training differ in the directions the last steps kept changing;
their mean sits nearer the middle of the low-loss region, which on the people model made fewer answers in the wrong
language on the development set (training/README.md, runs 10d-10g).
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model-00001-of-00001.safetensors"
SAME = ("config.json", "tokenizer.json")  # files that must be byte-identical across the checkpoints


def average(out_dir, checkpoints):
    """Write the mean of `checkpoints` (directories train.py saved) to `out_dir`; ValueError naming the file or
    tensor where they are not snapshots of one model."""
    if len(checkpoints) < 2:
        raise ValueError("average needs at least two checkpoints")
    first = checkpoints[0]
    for name in SAME:
        with open(os.path.join(first, name), "rb") as f:
            want = f.read()
        for ck in checkpoints[1:]:
            with open(os.path.join(ck, name), "rb") as f:
                if f.read() != want:
                    raise ValueError(f"{ck}: {name} differs from {first}'s; average only snapshots of one model")
    start = load_file(os.path.join(first, WEIGHTS))
    total = {k: v.double() for k, v in start.items()}
    dtypes = {k: v.dtype for k, v in start.items()}
    del start
    for ck in checkpoints[1:]:
        weights = load_file(os.path.join(ck, WEIGHTS))
        if weights.keys() != total.keys():
            extra = sorted(weights.keys() ^ total.keys())
            raise ValueError(f"{ck}: tensor {extra[0]} is in one checkpoint and not the other")
        for k, v in weights.items():
            if v.shape != total[k].shape or v.dtype != dtypes[k]:
                raise ValueError(f"{ck}: tensor {k} is {v.dtype} {tuple(v.shape)}, "
                                 f"{first} has {dtypes[k]} {tuple(total[k].shape)}")
            total[k] += v.double()
    mean = {k: (v / len(checkpoints)).to(dtypes[k]) for k, v in total.items()}
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(first):
        if name not in (WEIGHTS, "training_info.json") and os.path.isfile(os.path.join(first, name)):
            shutil.copyfile(os.path.join(first, name), os.path.join(out_dir, name))
    save_file(mean, os.path.join(out_dir, WEIGHTS), metadata={"format": "pt"})
    infos = [_training_info(ck) for ck in checkpoints]
    with open(os.path.join(out_dir, "training_info.json"), "w") as f:
        json.dump({"command": "python -m training.average --out OUT " + " ".join(checkpoints),
                   "averaged": [{"checkpoint": ck, "training_info": info} for ck, info in zip(checkpoints, infos)]},
                  f, indent=2)


def _training_info(checkpoint):
    path = os.path.join(checkpoint, "training_info.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    average(args.out, args.checkpoints)


if __name__ == "__main__":
    main()
