"""Train the tiny Parrot on synthetic multilingual visual questions. One command, fixed seed:

    python -m training.train            # 2 threads (the default); writes training/checkpoint/

trains the model shipped until session 13 (the first generator's data, one wording per question kind); the shipped
checkpoint now comes from `sh training/people_chain.sh WORKDIR` (five runs on the "people" data, below).

The "people" data (training/README.md): session 6's two runs (the second continues the first's stage 2),

    python -m training.train --data people --image-size 96 --patch-size 12 --tower-steps 10000 --out /tmp/ck1
    python -m training.train --data people --init /tmp/ck1 --seed 1 --tower-steps 0 --stage1-steps 0 \
        --stage2-steps 2000 --lr 1e-3 --out /tmp/ck2

session 7's one-run recipe and session 8's (RECIPES below):

    python -m training.train --recipe people2 --out /tmp/ck
    python -m training.train --recipe people3 --out /tmp/ck

and session 9's run 5 (people3 on run 1's tower: the tower, not the data, lost colour multiple choice in people2/3):

    python -m training.train --recipe people3 --no-augment --shapes-share 0 --tower-steps 0 --tower-from /tmp/ck1 \
        --save-every 500 --out /tmp/ck5

and session 11's run 8 (run 7 continued: a loss asking each language for an expert of its own, then the tower
trained in stage 2 too; training/README.md):

    python -m training.train --recipe people3 --shapes-share 0.2 --init /tmp/ck7 --seed 2 --tower-steps 0 \
        --stage1-steps 0 --stage2-steps 1000 --stage2-restart 0 --lr 1e-3 --language-routing 0.1 --out /tmp/ck8a
    python -m training.train --recipe people3 --shapes-share 0.5 --init /tmp/ck8a --seed 3 --tower-steps 0 \
        --stage1-steps 0 --stage2-steps 1000 --stage2-restart 0 --lr 1e-3 --language-routing 0.1 \
        --stage2-tower 0.3 --out /tmp/ck8c

and session 12's run 9 (a tower trained with small shifts of its pictures, the routing loss from stage 2's start):

    python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --save-every 500 --out /tmp/ck9

and session 13's continuations of it, which made the shipped checkpoint (`sh training/people_chain.sh WORKDIR`: run 9,
then 9b, then stage 0 continued on more ways of drawing each shape with `--init CKPT --tower-steps N --variety`, again
with `--wide 0.3`, then stage 2 with `--extra-phrasings`; training/README.md).

`--tower-from CKPT --tower-steps 0` takes stage 0's result from the checkpoint of a run with the same tower options
(people2 and people3 share theirs) instead of training it again: the same weights, ~450 s sooner.

Two stages as in Parrot: (1) alignment with the MoE switched off, on English questions only; (2) multilingual
instruction tuning with the MoE on. Unlike Parrot, the CLIP tower is trained too (there is no pretrained CLIP
here). Loss: cross-entropy on the answer tokens and the closing <|im_end|>, prompts in Parrot's chat format.
"""
import argparse
import json
import math
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import CLIPVisionConfig, Qwen2Config

from training import data
from training.modeling_parrot import IMAGE_TOKEN_INDEX, ParrotQwen2ForCausalLM
from training.tokenizer import SPECIAL_TOKENS, encode_prompt, train_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))

# --data people runs use 96 px in 12 px patches (--image-size 96 --patch-size 12): the same 64 patches, so the
# decoder costs the same, but small objects on wide canvases keep more of their outline (training/README.md).
IMAGE_SIZE = 64
VISION = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, patch_size=8,
              image_size=IMAGE_SIZE, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=64, num_channels=3)
LLM = dict(hidden_size=128, intermediate_size=320, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
           hidden_act="silu", max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=1e6,
           tie_word_embeddings=True, use_sliding_window=False, sliding_window=None, max_window_layers=4,
           attention_dropout=0.0, initializer_range=0.02, use_cache=True)
PARROT = dict(mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="cls_patch",
              mm_patch_merge_type="flat", image_aspect_ratio="pad", num_experts=6, moe_intermediate_size=128,
              use_moe=True, use_moe_residual=True, moe_weight=1.0, moe_top_k=6,
              mm_vision_tower="parrot-tiny/clip-vit-tiny-patch8-64")
# Multiple choice needs a two-step circuit: each option word checks itself against the image, then the answer
# position copies the letter of the option that matched. Trained on the letter alone it stays at chance (every
# variant in training/README.md); an auxiliary loss on the first step breaks that plateau: in stage 2 the hidden
# state after decoder layer OPTION_LAYER at the last token of every option word predicts, through a linear head
# that is thrown away afterwards, whether it is the right option.
OPTION_LAYER = 2
# A batch's conversations differ in length (1-3 turns, open or multiple choice): padded to the longest, 68 % of
# the rows are real; in 3 length-sorted micro-batches about 88 %, and a step is ~1.25x faster. Same loss.
MICRO_BATCHES = 3
# --data people: share of conversations that are one "describe" request ("two red circles"); the rest ask 1-3 kinds.
DESCRIBE_SHARE = 0.15
# --language-routing: the share of its routing weight each conversation is asked to give its language's own expert
# (expert i for data.LANGS[i]); a quarter makes the six languages' routing plainly different (training/README.md,
# run 8) while most of the weight can stay on the expert the answers were learnt through.
ROUTING_FLOOR = 0.25


def build_model(tok, image_size=IMAGE_SIZE, patch_size=VISION["patch_size"]):
    # Qwen checkpoints pad the embedding matrix past the tokenizer's size; do the same (multiple of 64).
    vocab = int(math.ceil(tok.get_vocab_size() / 64) * 64)
    config = Qwen2Config(vocab_size=vocab, bos_token_id=None, eos_token_id=tok.token_to_id("<|im_end|>"),
                         mm_hidden_size=VISION["hidden_size"], moe_hidden_size=LLM["hidden_size"], **LLM, **PARROT)
    config._attn_implementation = "sdpa"  # training speed; the saved checkpoint is implementation-independent
    vision = CLIPVisionConfig(**{**VISION, "image_size": image_size, "patch_size": patch_size})
    vision._attn_implementation = "sdpa"
    model = ParrotQwen2ForCausalLM(config, vision)
    # nn.Linear's default init for the modules Parrot adds; a larger gate init makes routing language-sensitive
    # from the start (the gate sees only the attention-pooled text embeddings).
    torch.nn.init.normal_(model.model.moe_model.gate.weight, std=2.0)
    return model


class Sampler:
    """Deterministic stream of conversations about a fixed pool of scenes: per scene 1-3 turns in one language,
    each asking a different kind (colour, shape, count), so no turn can copy an earlier turn's answer."""

    def __init__(self, tok, pool_size, seed, people=False, image_size=IMAGE_SIZE, shapes_share=0.0,
                 phrasings=data.PHRASINGS, variety=False, wide=0.0, word_dropout=0.0):
        rng = np.random.default_rng(seed)
        self.tok = tok
        self.people = people  # the "people" data: its pictures, paraphrased questions and "describe" turns
        self.phrasings = phrasings  # the people data's training wordings
        self.word_dropout = word_dropout  # data.sample_question_people's
        self.scenes, images = [], []
        for _ in range(pool_size):
            # shapes_share (people data only): that share of the pool drawn by the first generator, whose plain
            # pictures are also what `parrot demo` shows
            first = not people or (shapes_share > 0 and rng.random() < shapes_share)
            scene = data.random_scene(rng) if first else data.random_scene_people(rng, variety, wide)
            images.append(data.preprocess(scene.pop("image"), image_size))
            self.scenes.append(scene)
        self.pixels = torch.from_numpy(data.normalise(np.stack(images)))
        self.seed = seed
        self.rng = np.random.default_rng(seed + 1)
        self.cache = {}
        vocab = tok.get_vocab()  # for option_tokens
        self.letter_ids = {vocab[c]: c for c in "ABCD"}
        self.dot_id = vocab["."]
        self.line_end_ids = {i for t, i in vocab.items() if t.endswith("Ċ")}  # byte-level "\n"

    def ids(self, text):
        if text not in self.cache:
            self.cache[text] = encode_prompt(self.tok, text)
        return self.cache[text]

    def conversation(self, scene, lang, mc_prob):
        """-> (ids with one image placeholder, label mask, option flags). Parrot's formatter: turns joined by "\n";
        labels on each assistant message, its <|im_end|> and (for non-final turns) the "\n" after it. Option
        flags: (index in ids, is the right option) for the last token of every multiple-choice option word."""
        if self.people and self.rng.random() < DESCRIBE_SHARE:  # alone: its answer names all three at once
            kinds = ["describe"]
        else:
            kinds = [data.KINDS[k] for k in self.rng.permutation(len(data.KINDS))[:1 + self.rng.integers(3)]]
        ids, labels, flags = [], [], []
        for t, kind in enumerate(kinds):
            mc = bool(self.rng.random() < mc_prob)
            q = (data.sample_question_people(self.rng, scene, lang=lang, kind=kind, mc=mc, phrasings=self.phrasings,
                                             word_dropout=self.word_dropout) if self.people
                 else data.sample_question(self.rng, scene, lang=lang, kind=kind, mc=mc))
            if t == 0:
                head = self.ids(data.chat_prompt(q["user"]))
            else:
                head = self.ids(f"<|im_start|>user\n{q['user']}<|im_end|>\n<|im_start|>assistant\n")
            # open answers are taught with a leading space: then the answer's tokens are exactly the tokens of
            # the same word as a multiple-choice option ("\nA. red"), and with tied embeddings an option word's
            # input embedding is the output direction the open questions train, which makes matching an option
            # to what the image shows easy. The reference decoding strips surrounding white space (docs/model.md §7).
            answer = q["answer"] if q["mc"] else " " + q["answer"]
            tail = self.ids(answer + "<|im_end|>" + ("\n" if t < len(kinds) - 1 else ""))
            if q["mc"]:
                options = self.option_tokens(head)
                assert len({letter for _, letter in options}) == sum(1 for o in q["mcq"]["options"].values() if o)
                flags += [(len(ids) + j, letter == q["answer"]) for j, letter in options]
            ids += head + tail
            labels += [False] * len(head) + [True] * len(tail)
        return ids, labels, flags

    def option_tokens(self, ids):
        """(index, letter) of the last token of every option word in a prompt (the words run from after "\n{L}."
        to the next token that ends a line). Only the last token has read the whole word: many words are split
        ("Ġ" + "red"), and a loss on the shared first piece would train the very position that has to produce
        the rest of the word in open answers."""
        out = []
        for j in range(1, len(ids) - 2):
            if ids[j] in self.letter_ids and ids[j + 1] == self.dot_id and ids[j - 1] in self.line_end_ids:
                k = j + 2
                while k + 1 < len(ids) and ids[k + 1] not in self.line_end_ids:
                    k += 1
                out.append((k, self.letter_ids[ids[j]]))
        return out

    def batch(self, size, langs, mc_prob):
        idx = self.rng.integers(len(self.scenes), size=size)
        convs, self.batch_langs = [], []  # batch_langs: each conversation's language (language_routing_loss)
        for i in idx:
            lang = langs[self.rng.integers(len(langs))]
            self.batch_langs.append(lang)
            convs.append(self.conversation(self.scenes[i], lang, mc_prob))
        return torch.from_numpy(idx), convs


def tower_features(model, pixels, batch=256):
    """hidden_states[select_layer] of the (frozen) CLIP tower for every pool image, before the projector."""
    feats = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            out = model.model.vision_tower.vision_tower.vision_model(pixel_values=pixels[i:i + batch],
                                                                     output_hidden_states=True)
            feats.append(out.hidden_states[model.config.mm_vision_select_layer])
    return torch.cat(feats)


def dihedral(pixels, k):
    """One of the 8 flips and quarter turns (k in 0-7) of a batch (B, 3, H, W). Colour, shape and count stay what
    they were: a turned or mirrored triangle or star is still one (the generators draw them at any angle)."""
    if k & 4:
        pixels = pixels.transpose(-1, -2)
    return torch.rot90(pixels, k & 3, dims=(-2, -1))


def shift(pixels, offsets, max_shift):
    """Each picture of a batch (B, C, H, W) moved by its own (dy, dx) in `offsets` (B, 2), |dy|, |dx| <= max_shift
    pixels (positive: down / right). The strip a shift uncovers is filled with the picture's own border row or column
    (pad with the edge, then crop): the pictures' borders are background (their own, or preprocess's mean-colour
    padding), so the fill is background too, and nothing of the picture is wrapped round to the other side as a roll
    would (an object near one border would reappear at the other). Content shifted past the far border is cut."""
    m = max_shift
    padded = F.pad(pixels, (m, m, m, m), mode="replicate")
    h, w = pixels.shape[-2:]
    return torch.stack([padded[i, :, m - dy:m - dy + h, m - dx:m - dx + w]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


def tower_heads(model):
    """Stage 0's linear heads on the tower's pooled features (CLS row and mean patch row)."""
    d = model.vision_config.hidden_size
    return torch.nn.ModuleDict({"colour": torch.nn.Linear(2 * d, len(data.COLOURS)),
                                "shape": torch.nn.Linear(2 * d, len(data.SHAPES)),
                                "count": torch.nn.Linear(2 * d, len(data.COUNTS))})


def load_tower(model, ckpt):
    """Stage 0's result taken from `ckpt` instead of trained again (--tower-from): its tower's weights. The tower is
    frozen after stage 0, so any checkpoint of a run with the same tower options holds exactly that tower. Also
    draws stage 0's heads, which are then thrown away, so that torch's random stream — and so the rest of the
    run — is the same as in the run that trained the tower."""
    with torch.random.fork_rng():  # loading builds a model, whose initialisation draws random numbers
        source = ParrotQwen2ForCausalLM.from_pretrained(ckpt)
    for key in ("image_size", "patch_size", "hidden_size", "num_hidden_layers"):
        if getattr(source.vision_config, key) != getattr(model.vision_config, key):
            raise ValueError(f"--tower-from {ckpt}: vision {key} {getattr(source.vision_config, key)} "
                             f"!= this run's {getattr(model.vision_config, key)}")
    model.model.vision_tower.load_state_dict(source.model.vision_tower.state_dict())
    tower_heads(model)


def pretrain_tower(model, sampler, steps, batch_size, lr, log_every, t0, augment=False, max_shift=0, probe_steps=0):
    """Stage 0, standing in for CLIP's own pretraining (Parrot starts from a pretrained, frozen CLIP; none exists
    here): the tower learns colour, shape and count as classification from its selected layer (CLS row and mean
    of the patch rows), with linear heads that are thrown away afterwards. `augment`: every batch flipped or
    turned (one of 8, at random), so the tower sees 8 times the pool's pictures and learns it less by heart.
    `max_shift` > 0: every picture also moved by its own random (dy, dx), each uniform in -max_shift..max_shift
    pixels (shift), so where an object falls against the patch grid varies (half a 12-px patch either way covers
    every position an object can take against the grid). `probe_steps` N > 0 (continuing a trained tower, --init):
    the new heads are first fitted alone for N steps on the frozen tower, so that the tower's first updates come from
    heads that read it rather than from random ones."""
    tower = model.model.vision_tower.vision_tower.vision_model
    heads = tower_heads(model)
    labels = {"colour": torch.tensor([data.COLOURS.index(s["colour"]) for s in sampler.scenes]),
              "shape": torch.tensor([data.SHAPES.index(s["shape"]) for s in sampler.scenes]),
              "count": torch.tensor([data.COUNTS.index(s["count"]) for s in sampler.scenes])}
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = _schedule(opt, steps)
    rng = np.random.default_rng(sampler.seed + 2)

    def batch():
        idx = torch.from_numpy(rng.integers(len(sampler.scenes), size=batch_size))
        pixels = dihedral(sampler.pixels[idx], int(rng.integers(8))) if augment else sampler.pixels[idx]
        if max_shift:  # drawn after the flip, and only when on, so that runs without shifts draw what they did
            pixels = shift(pixels, torch.from_numpy(rng.integers(-max_shift, max_shift + 1, size=(batch_size, 2))),
                           max_shift)
        return idx, pixels

    def pooled_features(pixels):
        h = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[model.config.mm_vision_select_layer]
        return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)

    if probe_steps:
        probe_opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        for step in range(probe_steps):
            idx, pixels = batch()
            with torch.no_grad():
                pooled = pooled_features(pixels)
            loss = sum(F.cross_entropy(head(pooled), labels[k][idx]) for k, head in heads.items())
            probe_opt.zero_grad(set_to_none=True)
            loss.backward()
            probe_opt.step()
            if (step + 1) % log_every == 0:
                print(f"tower heads step {step + 1}/{probe_steps} loss {loss.item():.4f} t {time.time() - t0:.0f}s",
                      flush=True)
    running, correct, seen = 0.0, {k: 0 for k in heads}, 0
    for step in range(steps):
        idx, pixels = batch()
        pooled = pooled_features(pixels)
        loss = 0.0
        for k, head in heads.items():
            logits = head(pooled)
            loss = loss + F.cross_entropy(logits, labels[k][idx])
            correct[k] += int((logits.argmax(-1) == labels[k][idx]).sum())
        seen += batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % log_every == 0:
            acc = " ".join(f"{k} {correct[k] / seen:.3f}" for k in heads)
            print(f"tower step {step + 1}/{steps} loss {running / log_every:.4f} train-acc {acc} "
                  f"t {time.time() - t0:.0f}s", flush=True)
            running, correct, seen = 0.0, {k: 0 for k in heads}, 0
    return heads


def _schedule(opt, steps):
    """Linear warm-up, then cosine down to 10 % of the peak."""
    warm = max(1, min(100, steps // 10))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) *
                                             (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))


def batch_loss(model, pixels, convs, pad_id, tower_feats=None, option_head=None):
    """Batched Parrot forward (same math as prepare_inputs_embeds; the MoE routes on the unlabelled tokens, as
    Parrot's training does, which for one turn are exactly the prompt tokens inference sees).
    -> (summed cross-entropy of the labelled tokens, summed auxiliary option loss (see OPTION_LAYER; 0 without
    `option_head`), routing weights (B, experts)); sums, so that micro-batches add up to the batch (step_gradients)."""
    p = convs[0][0].index(IMAGE_TOKEN_INDEX)
    assert all(ids.index(IMAGE_TOKEN_INDEX) == p for ids, _, _ in convs)  # the chat header before <image> is constant
    texts = [ids[:p] + ids[p + 1:] for ids, _, _ in convs]
    labels = [lab[:p] + lab[p + 1:] for _, lab, _ in convs]
    L = max(len(t) for t in texts)
    ids = torch.full((len(texts), L), pad_id, dtype=torch.long)
    question_mask = torch.zeros((len(texts), L), dtype=torch.bool)
    for b, (t, lab) in enumerate(zip(texts, labels)):
        ids[b, :len(t)] = torch.tensor(t)
        question_mask[b, :len(t)] = ~torch.tensor(lab)
    T = model.model.embed_tokens(ids)
    image = model.encode_images(pixels) if tower_feats is None else model.model.mm_projector(tower_feats)
    out, routing = model.moe(image, T, question_mask)
    N = out.shape[1]
    # right padding + causal attention: the pad rows never influence real rows, so no attention mask is needed
    embeds = torch.cat([T[:, :p], out, T[:, p:]], dim=1)
    result = model.model(inputs_embeds=embeds, use_cache=False, output_hidden_states=option_head is not None)
    rows, cols, targets = [], [], []
    for b, (t, lab) in enumerate(zip(texts, labels)):
        for j, (tok, is_label) in enumerate(zip(t, lab)):
            if is_label:  # text index j >= p sits at spliced position j + N; it is predicted from j + N - 1
                rows.append(b)
                cols.append(j + N - 1)
                targets.append(tok)
    logits = model.lm_head(result.last_hidden_state[torch.tensor(rows), torch.tensor(cols)])
    answer_loss = F.cross_entropy(logits, torch.tensor(targets), reduction="sum")
    option_loss = torch.zeros(())
    flags = [(b, j - 1 + N, right) for b, (_, _, fl) in enumerate(convs) for j, right in fl]  # ids index j > p
    if option_head is not None and flags:
        b, pos, right = (torch.tensor(v) for v in zip(*flags))
        hidden = result.hidden_states[OPTION_LAYER][b, pos]
        option_loss = F.cross_entropy(option_head(hidden), right.long(), reduction="sum")
    return answer_loss, option_loss, routing


def balance_loss(routing):
    """KL(mean routing weights of the batch || uniform): 0 when the conversations, on average, use every expert
    alike, log(experts) when all go to one. Only the mean is pushed towards uniform, so each conversation (each
    language) can still prefer its own experts. A training-time loss only: the model and what the engine
    computes are unchanged (training/README.md, --balance)."""
    mean = routing.mean(0)
    return (mean * (mean * mean.numel()).clamp_min(1e-12).log()).sum()


def language_routing_loss(routing, experts, floor=ROUTING_FLOOR):
    """Mean over the conversations of max(0, log(floor) - log(w[own expert])), where a conversation's own expert is
    its language's index in data.LANGS (`experts`, (B,) long): 0 once every conversation gives at least `floor` of
    its routing weight to its language's expert, so it asks each language for an expert of its own and no more;
    the rest of the weight stays where the answer loss puts it (a shared expert, in practice). A training-time
    loss only, like balance_loss (training/README.md, run 8: --language-routing)."""
    own = routing.gather(1, experts[:, None])[:, 0]
    return torch.relu(math.log(floor) - own.clamp_min(1e-12).log()).mean()


def step_gradients(model, sampler, idx, convs, pad_id, feats, option_head, balance=0.0, language_routing=0.0,
                   experts=None):
    """Gradient of the batch's loss — mean cross-entropy over all its answer tokens, plus the mean option loss over
    all its option words, plus `balance` x balance_loss and `language_routing` x language_routing_loss (its
    conversations' own experts `experts`, (B,) long) of each micro-batch (weighted by its share of the batch)
    when the MoE is on — accumulated over MICRO_BATCHES groups of conversations of similar length, each padded
    only to its own longest. Returns (loss, summed routing weights (experts,))."""
    n_labels = sum(sum(lab) for _, lab, _ in convs)
    n_flags = sum(len(fl) for _, _, fl in convs) if option_head is not None else 0
    order = sorted(range(len(convs)), key=lambda b: len(convs[b][0]))
    total, routing_sum = 0.0, 0.0
    for part in np.array_split(np.array(order), MICRO_BATCHES):
        rows = torch.from_numpy(part)
        pixels = sampler.pixels[idx[rows]] if feats is None else None
        answer_loss, option_loss, routing = batch_loss(model, pixels, [convs[b] for b in part], pad_id,
                                                       tower_feats=None if feats is None else feats[idx[rows]],
                                                       option_head=option_head)
        loss = answer_loss / n_labels + (option_loss / n_flags if n_flags else 0.0)
        if balance and model.config.use_moe:
            loss = loss + balance * balance_loss(routing) * len(part) / len(convs)
        if language_routing and model.config.use_moe:
            loss = loss + language_routing * language_routing_loss(routing, experts[rows]) * len(part) / len(convs)
        loss.backward()
        total += loss.item()
        routing_sum = routing_sum + routing.detach().sum(0)
    return total, routing_sum


def train(out_dir, threads=2, seed=0, tower_steps=5000, stage1_steps=1200, stage2_steps=3000, batch_size=24, lr=2e-3, pool=20000,
          log_every=50, people=False, image_size=IMAGE_SIZE, patch_size=VISION["patch_size"], init=None,
          augment=False, shapes_share=0.0, more_phrasings=False, stage2_lr=None, balance=0.0, tower_from=None,
          stage2_restart=0, save_every=0, language_routing=0.0, stage2_tower=0.0, shift=0, variety=False,
          tower_lr=None, wide=0.0, extra_phrasings=False, word_dropout=0.0, grammar_phrasings=False):
    """`init`: continue from a checkpoint this function saved (its tokenizer and weights; stage 2 runs with the
    experts as they are; stage1_steps must be 0). With tower_steps > 0 it first continues stage 0 on the
    checkpoint's tower (new heads, fitted alone for the first 200 steps; pretrain_tower's probe_steps).
    `tower_lr`: stage 0's peak learning rate (default `lr`). The rest (people data; see RECIPES):
    `augment` flips/turns the tower's pictures, `shapes_share` of the pool comes from the first generator,
    `more_phrasings` adds data.MORE_PHRASINGS, `stage2_lr` is stage 2's own peak learning rate (default `lr`),
    `balance` weighs balance_loss in stage 2. `stage2_restart` N: stage 2's first N steps at `lr`, then the rest
    with a fresh schedule, optimizer and option head at `stage2_lr` (as run 2, the only run whose multiple choice
    read colour, continued run 1; training/README.md). `tower_from`: stage 0's tower taken from that checkpoint (load_tower;
    tower_steps must be 0); with the checkpoint of a run with the same tower options, the same result as that run's
    options would give. `save_every` N: also a checkpoint every N stage-2 steps (counted across both parts of a
    restarted stage 2) in {out_dir}-stage2-step{N}, e.g. for training.option_probe while the run goes on; it changes
    nothing of the run. `language_routing` weighs language_routing_loss in stage 2 (each language asks for an expert
    of its own, as Parrot's MoE is meant to route by the prompt's language). `stage2_tower` F > 0: stage 2 trains the
    tower too, at F x its learning rate (default 0: frozen, as in Parrot). `shift` N > 0: stage 0 also moves each
    picture by up to N pixels each way (pretrain_tower's max_shift; default 0: off). `variety`: the people pictures
    drawn with more ways of drawing each shape (data.draw_scene_people; default off). `wide` F: that share of the
    people pictures made clearly wide or tall (data.canvas_size; default 0). `extra_phrasings`: the people questions
    also use data.MORE_PHRASINGS and data.EXTRA_PHRASINGS (data.PHRASINGS_EXTRA; default off; it overrides
    `more_phrasings`). `grammar_phrasings`: as `extra_phrasings`, and English also training/grammar.py's wordings
    (data.phrasings_grammar; default off; it overrides both). `word_dropout` P: half of the people questions lose
    each word with probability P (data.drop_words; default 0: off)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.time()
    phrasings = (data.phrasings_grammar() if grammar_phrasings else data.PHRASINGS_EXTRA if extra_phrasings
                 else data.PHRASINGS_MORE if more_phrasings else data.PHRASINGS)
    if init:
        assert stage1_steps == 0, "--init continues stage 0 and stage 2, not stage 1"
        tok = Tokenizer.from_file(os.path.join(init, "tokenizer.json"))
        model = ParrotQwen2ForCausalLM.from_pretrained(init)
        model.config._attn_implementation = model.vision_config._attn_implementation = "sdpa"  # as build_model
        image_size = model.vision_config.image_size
    else:
        # tokenizer corpus: every template string plus sampled full conversations
        rng = np.random.default_rng(seed + 100)
        corpus = (data.all_texts_people(phrasings) if people else data.all_texts()) * 5
        for _ in range(3000):
            scene = data.random_labels(rng) if people else data.random_scene(rng)  # people: text only, no picture
            q = (data.sample_question_people(rng, scene, phrasings=phrasings) if people
                 else data.sample_question(rng, scene))
            corpus.append(data.chat_prompt(q["user"]) + q["answer"] + "<|im_end|>")
        tok = train_tokenizer(corpus, vocab_size=1024)
        model = build_model(tok, image_size, patch_size)
    sampler = Sampler(tok, pool, seed + 200, people, image_size, shapes_share, phrasings, variety, wide, word_dropout)
    pad_id = tok.token_to_id(SPECIAL_TOKENS[0])
    print(f"setup {time.time() - t0:.1f}s, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)

    if tower_from:
        assert tower_steps == 0 and not init, "--tower-from replaces stage 0 of a new model"
        load_tower(model, tower_from)
        print(f"tower from {tower_from}", flush=True)
    if tower_steps:
        pretrain_tower(model, sampler, tower_steps, 32, tower_lr or lr, log_every, t0, augment, shift,
                       probe_steps=200 if init else 0)
        print(f"tower done t {time.time() - t0:.0f}s cpu {_cpu_seconds():.0f}s", flush=True)
    # (name, steps, languages, share of multiple-choice questions, MoE on, tower trained, peak learning rate)
    # Stage 1 is long enough for colour: the decoder learns to read it only after a plateau of 400-600 steps
    # (colour 0.15 -> 0.99); a 600-step stage left it at 0.57 and stage 2 then lost it (training/README.md).
    feats = None
    stage2_done = 0  # stage-2 steps so far, across both parts of a restarted stage 2 (save_every)
    tune = stage2_tower > 0
    stages = [("align", stage1_steps, ["en"], 0.0, False, False, lr),
              ("moe", stage2_steps, data.LANGS, 0.6, True, tune, stage2_lr or lr)]
    if stage2_restart and stage2_steps:  # a tower-only run of a recipe (--stage1-steps 0 --stage2-steps 0) has none
        assert 0 < stage2_restart < stage2_steps, "--stage2-restart splits stage 2"
        stages[1:] = [("moe", stage2_restart, data.LANGS, 0.6, True, tune, lr),
                      ("moe2", stage2_steps - stage2_restart, data.LANGS, 0.6, True, tune, stage2_lr or lr)]
    for name, steps, langs, mc_prob, use_moe, train_tower, stage_lr in stages:
        if steps == 0:
            continue
        model.config.use_moe = use_moe
        # the tower stays frozen in both stages, as in Parrot, so its features are computed once per pool image
        # (unless --stage2-tower: then stage 2 runs it on the pictures at every step)
        model.model.vision_tower.requires_grad_(train_tower)
        if not train_tower and feats is None:
            feats = tower_features(model, sampler.pixels)
        stage_feats = None if train_tower else feats
        if name == "moe" and not init:
            # experts start at zero output, so the MoE first passes moe_weight*x = x (moe_weight 1): stage 2 starts
            # exactly from stage 1's function. (With Parrot's 0.1 the image rows shrink tenfold against the
            # decoder's residual updates; in 4 of the 5 runs made with 0.1, colour fell to chance in stage 2.)
            for expert in model.model.moe_model.experts:
                torch.nn.init.zeros_(expert.down_proj.weight)
        # stage 1 leaves the MoE out of the graph (use_moe=False returns x); its parameters are not updated
        params = [p for n, p in model.named_parameters() if p.requires_grad and (use_moe or "moe_model" not in n)]
        option_head = torch.nn.Linear(model.config.hidden_size, 2) if mc_prob > 0 else None
        if option_head is not None:
            params += list(option_head.parameters())
        tower = {id(p) for p in model.model.vision_tower.parameters()}
        groups = [{"params": [p for p in params if id(p) not in tower], "lr": stage_lr}]
        if train_tower:  # the tower at its own (lower) share of the stage's learning rate
            groups.append({"params": [p for p in params if id(p) in tower], "lr": stage_lr * stage2_tower})
        opt = torch.optim.AdamW(groups, lr=stage_lr, weight_decay=0.01, betas=(0.9, 0.98))
        sched = _schedule(opt, steps)
        model.train()
        running, routing = 0.0, 0.0
        for step in range(steps):
            idx, convs = sampler.batch(batch_size, langs, mc_prob)
            opt.zero_grad(set_to_none=True)
            experts = torch.tensor([data.LANGS.index(lang) for lang in sampler.batch_langs])
            loss, routing_sum = step_gradients(model, sampler, idx, convs, pad_id, stage_feats, option_head, balance,
                                               language_routing, experts)
            running += loss
            routing = routing + routing_sum
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if use_moe:
                stage2_done += 1
                if save_every and stage2_done % save_every == 0:
                    model.save_pretrained(f"{out_dir.rstrip(os.sep)}-stage2-step{stage2_done}", vision_inside=True,
                                          tokenizer=tok, dtype=torch.float32)
            if (step + 1) % log_every == 0:
                experts = (" routing " + " ".join(f"{v:.2f}" for v in (routing / (log_every * batch_size)).tolist())
                           if use_moe else "")
                print(f"{name} step {step + 1}/{steps} loss {running / log_every:.4f} "
                      f"t {time.time() - t0:.0f}s cpu {_cpu_seconds():.0f}s{experts}", flush=True)
                running, routing = 0.0, 0.0
    model.config.use_moe = True
    model.requires_grad_(True)
    model.eval()
    model.config._attn_implementation = "eager"
    model.vision_config._attn_implementation = "eager"
    model.save_pretrained(out_dir, vision_inside=True, tokenizer=tok, dtype=torch.float32)
    elapsed = time.time() - t0
    cpu_seconds = _cpu_seconds()
    extra = ((" --augment" if augment else "") + (f" --shift {shift}" if shift else "")
             + (" --variety" if variety else "") + (f" --wide {wide:g}" if wide else "")
             + (f" --tower-lr {tower_lr:g}" if tower_lr else "")
             + (f" --shapes-share {shapes_share:g}" if shapes_share else "")
             + (" --more-phrasings" if more_phrasings else "") + (" --extra-phrasings" if extra_phrasings else "")
             + (" --grammar-phrasings" if grammar_phrasings else "")
             + (f" --word-dropout {word_dropout:g}" if word_dropout else "")
             + (f" --stage2-lr {stage2_lr:g}" if stage2_lr else "")
             + (f" --balance {balance:g}" if balance else "")
             + (f" --language-routing {language_routing:g}" if language_routing else "")
             + (f" --stage2-tower {stage2_tower:g}" if stage2_tower else "")
             + (f" --stage2-restart {stage2_restart}" if stage2_restart else ""))
    with open(os.path.join(out_dir, "training_info.json"), "w") as f:
        json.dump({"command": f"python -m training.train --threads {threads} --seed {seed} --tower-steps {tower_steps} "
                              f"--stage1-steps {stage1_steps} --stage2-steps {stage2_steps} --batch-size {batch_size} "
                              f"--pool {pool} --lr {lr:g} --data {'people' if people else 'shapes'}"
                              + (f" --init {init}" if init else f" --image-size {image_size} --patch-size {patch_size}")
                              + (f" --tower-from {tower_from}" if tower_from else "")
                              + extra,
                   "wall_seconds": round(elapsed), "cpu_seconds": round(cpu_seconds), "torch": torch.__version__}, f, indent=2)
    print(f"saved {out_dir} after {elapsed:.0f}s wall, {cpu_seconds:.0f}s CPU", flush=True)
    return model, tok


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --recipe NAME: a named set of the options below (given options still override it). The defaults are the shipped
# model's recipe. people2 (session 7, training/README.md) combines what runs 1-2 on the people data suggested:
# 96 px tower with flips/turns, a fifth of the pool from the first generator (the demo's plain pictures), 5 more
# wordings per kind in en/pt/tr, one long stage 2 at a lower peak (multiple choice formed at 1e-3 in run 2, not
# at 2e-3 in run 1) and a routing-balance loss against the MoE sending everything to one expert.
# people3 (session 8, run 4): people2's tower and data; stage 2 without the balance loss and in two parts, as runs
# 1 + 2 were: 2500 steps at 2e-3, then 2000 restarted at 1e-3. Colour multiple choice still did not form; on run 1's
# tower (run 5: --no-augment --shapes-share 0) the same data and stage 2 formed it, so the tower lost it.
RECIPES = {"people2": dict(data="people", image_size=96, patch_size=12, tower_steps=10000, augment=True,
                           shapes_share=0.2, more_phrasings=True, stage2_steps=4500, stage2_lr=1e-3, balance=0.1),
           "people3": dict(data="people", image_size=96, patch_size=12, tower_steps=10000, augment=True,
                           shapes_share=0.2, more_phrasings=True, stage2_steps=4500, stage2_restart=2500,
                           stage2_lr=1e-3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "checkpoint"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tower-steps", type=int, default=5000)
    ap.add_argument("--stage1-steps", type=int, default=1200)
    ap.add_argument("--stage2-steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="the tower's input side in pixels")
    ap.add_argument("--patch-size", type=int, default=VISION["patch_size"])
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of every stage")
    ap.add_argument("--init", default=None, help="continue from this checkpoint: stage 0 on its tower if "
                    "--tower-steps > 0, then stage 2 (with --stage1-steps 0)")
    ap.add_argument("--tower-lr", type=float, default=None, help="stage 0's peak learning rate (default --lr)")
    ap.add_argument("--tower-from", default=None, help="take stage 0's tower from this checkpoint of a run with the "
                    "same tower options instead of training it (with --tower-steps 0)")
    ap.add_argument("--data", choices=["shapes", "people"], default="shapes",
                    help="shapes: the shipped model's data (default); people: paraphrases, describe, varied pictures")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                    help="flip/turn the tower's pictures in stage 0")
    ap.add_argument("--shift", type=int, default=0, help="stage 0: move each of the tower's pictures by up to this "
                    "many pixels each way, at random (default 0: off)")
    ap.add_argument("--shapes-share", type=float, default=0.0,
                    help="people data: this share of the pool drawn by the first (shapes) generator")
    ap.add_argument("--variety", action=argparse.BooleanOptionalAction, default=False,
                    help="people data: more ways of drawing each shape (turned and rounded squares, stars of any "
                    "pointedness; data.draw_scene_people)")
    ap.add_argument("--wide", type=float, default=0.0, help="people data: this share of the pictures made clearly "
                    "wide or tall, aspect ratio 1.5-4 either way (data.canvas_size; default 0)")
    ap.add_argument("--more-phrasings", action=argparse.BooleanOptionalAction, default=False,
                    help="people data: add data.MORE_PHRASINGS")
    ap.add_argument("--extra-phrasings", action=argparse.BooleanOptionalAction, default=False,
                    help="people data: add data.MORE_PHRASINGS and data.EXTRA_PHRASINGS")
    ap.add_argument("--grammar-phrasings", action=argparse.BooleanOptionalAction, default=False,
                    help="people data: as --extra-phrasings, and English also training/grammar.py's wordings")
    ap.add_argument("--word-dropout", type=float, default=0.0, help="people data: half the questions lose each "
                    "word with this probability (data.drop_words; default 0: off)")
    ap.add_argument("--stage2-lr", type=float, default=None, help="stage 2's peak learning rate (default --lr)")
    ap.add_argument("--balance", type=float, default=0.0, help="weight of the routing-balance loss in stage 2")
    ap.add_argument("--language-routing", type=float, default=0.0, help="weight of a stage-2 loss that asks each "
                    "language for an expert of its own (language_routing_loss; default off)")
    ap.add_argument("--stage2-tower", type=float, default=0.0, help="train the tower in stage 2 too, at this share of "
                    "stage 2's learning rate (default 0: frozen)")
    ap.add_argument("--stage2-restart", type=int, default=0, help="stage 2's first N steps at --lr, the rest "
                    "restarted (schedule, optimizer, option head) at --stage2-lr")
    ap.add_argument("--save-every", type=int, default=0, help="also save a checkpoint every N stage-2 steps "
                    "(OUT-stage2-stepN)")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help="a named set of these options (RECIPES); options given explicitly override it")
    recipe = ap.parse_known_args()[0].recipe
    if recipe:
        ap.set_defaults(**RECIPES[recipe])
    args = ap.parse_args()
    train(args.out, threads=args.threads, seed=args.seed, tower_steps=args.tower_steps, stage1_steps=args.stage1_steps,
          stage2_steps=args.stage2_steps, batch_size=args.batch_size, pool=args.pool, lr=args.lr,
          people=args.data == "people", image_size=args.image_size, patch_size=args.patch_size, init=args.init,
          augment=args.augment, shapes_share=args.shapes_share, more_phrasings=args.more_phrasings,
          stage2_lr=args.stage2_lr, balance=args.balance, log_every=args.log_every, tower_from=args.tower_from,
          stage2_restart=args.stage2_restart, save_every=args.save_every, language_routing=args.language_routing,
          stage2_tower=args.stage2_tower, shift=args.shift,
          variety=args.variety, tower_lr=args.tower_lr, wide=args.wide, extra_phrasings=args.extra_phrasings,
          grammar_phrasings=args.grammar_phrasings,
          word_dropout=args.word_dropout)


if __name__ == "__main__":
    main()
