"""Shared fixtures: tiny random Hugging Face models built on the spot (transformers is the reference)."""
import os
import sys

import numpy as np
import pytest

# no test touches the network: Hub ids resolve from caches the tests build (huggingface_hub reads this on import)
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def make_qwen2(tmp_dir, *, seed=0, vocab=211, hidden=64, layers=2, heads=4, kv_heads=2, ff=96, tied=False,
               rope_theta=10000.0, max_pos=512, shard="40KB", dtype="float32"):
    """A random Qwen2ForCausalLM saved as sharded safetensors; returns (model, directory)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=ff, tie_word_embeddings=tied,
                      rope_theta=rope_theta, max_position_embeddings=max_pos, rms_norm_eps=1e-6,
                      attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg).eval()
    # random init has tiny weights; scale up so logits are far from uniform and differences would show
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 and p.numel() == hidden:
                p.uniform_(0.5, 1.5)  # norm weights
            elif p.dim() == 1:
                p.normal_(0, 0.5)  # biases
            else:
                p.normal_(0, 0.15)
    d = os.path.join(str(tmp_dir), f"qwen2-{seed}")
    model.to(getattr(torch, dtype)).save_pretrained(d, max_shard_size=shard, safe_serialization=True)
    return model.float(), d


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_runtest_logstart(nodeid, location):
    """With PARROT_TEST_TRACE=FILE (set by .ci/run), the test that is starting is written there first, so a
    run that dies without a report (a signal, os._exit in a library) still says where it was."""
    path = os.environ.get("PARROT_TEST_TRACE")
    if path:
        with open(path, "w") as f:
            f.write(nodeid + "\n")
