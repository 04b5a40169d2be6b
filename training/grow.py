"""Give a checkpoint's decoder more layers that change nothing yet, to train on from there (run 11 in
training/README.md).

    python -m training.grow --layers N --out OUT CKPT

N layers are appended after the decoder's last. Each starts as the identity on the residual stream: its attention
output projection and its MLP down projection are zero, so it adds nothing and the grown model computes exactly what
CKPT computes (every logit equal); its norms are one, its biases zero and its other weights drawn as a new layer's
are (normal, std 0.02, train.build_model's initializer range), so that training can grow it from there: the
gradients reach the zero projections at once, and the rest once those have moved. The tokenizer and every other
tensor are CKPT's; config.json gets the new layer count.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file

from training.average import WEIGHTS
from training.modeling_parrot import _save_sharded


def grow(out_dir, checkpoint, layers, seed=0):
    """Write `checkpoint` with `layers` more decoder layers (see the module's docstring) to `out_dir`."""
    if layers < 1:
        raise ValueError(f"--layers must be at least 1, got {layers}")
    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    n = config["num_hidden_layers"]
    weights = load_file(os.path.join(checkpoint, WEIGHTS))
    last = f"model.layers.{n - 1}."
    template = {k[len(last):]: v for k, v in weights.items() if k.startswith(last)}
    if not template:
        raise ValueError(f"{checkpoint}: no tensors of decoder layer {n - 1} (model.layers.{n - 1}.*)")
    std = config.get("initializer_range", 0.02)
    gen = torch.Generator().manual_seed(seed)
    for i in range(n, n + layers):
        for name, v in sorted(template.items()):
            if name.endswith("layernorm.weight"):
                new = torch.ones_like(v)
            elif name in ("self_attn.o_proj.weight", "mlp.down_proj.weight") or name.endswith(".bias"):
                new = torch.zeros_like(v)
            else:
                new = (torch.randn(v.shape, generator=gen, dtype=torch.float64) * std).to(v.dtype)
            weights[f"model.layers.{i}.{name}"] = new
    config["num_hidden_layers"] = n + layers
    if "max_window_layers" in config:
        config["max_window_layers"] = n + layers
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(checkpoint):
        path = os.path.join(checkpoint, name)
        if name not in (WEIGHTS, "config.json", "model.safetensors.index.json") and os.path.isfile(path):
            shutil.copyfile(path, os.path.join(out_dir, name))
    _save_sharded(weights, out_dir, max_shard_size=sum(v.numel() * v.element_size() for v in weights.values()))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, required=True, help="decoder layers to append")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new layers' random weights")
    ap.add_argument("--out", required=True)
    ap.add_argument("checkpoint")
    args = ap.parse_args()
    grow(args.out, args.checkpoint, args.layers, args.seed)


if __name__ == "__main__":
    main()
