"""Models named by Hugging Face Hub id: ``parrot.load("AIDC-AI/Parrot-7B")``.

:func:`resolve_model` turns whatever names a model — a parrot ``.gguf`` file, a checkpoint directory, or a Hub
id such as ``AIDC-AI/Parrot-7B`` — into a GGUF file the engine loads, converting a checkpoint once and keeping
the result in ``$PARROT_CACHE`` (default ``~/.cache/parrot``). Every entry point that takes a model (the Python
API, ``parrot generate/chat/bench -m``, ``parrot convert``) goes through it.

Downloads use ``huggingface_hub.snapshot_download`` (``pip install "parrot-vlm[hub]"``) with ``allow_patterns``
limited to what conversion reads (config, tokenizer, safetensors — or torch ``.bin`` when a repository has no
safetensors), so it honours everything huggingface_hub does: ``HF_HOME`` / ``HF_HUB_CACHE`` (where snapshots
live), ``HF_HUB_OFFLINE=1`` (no network: the cached snapshot or an error), ``HF_TOKEN`` or ``hf auth login``
(gated and private repositories), and ``revision=`` (a branch, tag or commit). Converted Hub models are cached
as ``$PARROT_CACHE/hub/<org>--<name>/<commit>-<dtype>.gguf``: keyed by repository, the resolved commit (so a
moved branch converts again) and dtype.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from typing import Iterator, List, Optional

from parrot.errors import ModelError

__all__ = ["resolve_model", "snapshot", "is_hub_id"]

# config, tokenizer and generation files; the weights are added per format
CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]
SAFETENSORS_PATTERNS = ["*.safetensors"]
BIN_PATTERNS = ["pytorch_model*.bin"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is shaped like ``org/name`` and is not an existing local path."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not os.path.exists(name) and \
        not name.lower().endswith((".gguf", ".safetensors", ".bin", ".json"))  # a mistyped file path


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,  # type: ignore[attr-defined]
                                       enable_progress_bars)

    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


def _has_weights(d: str, patterns_ext: str) -> bool:
    return any(n.endswith(patterns_ext) for n in os.listdir(d))


def snapshot(repo_id: str, *, revision: Optional[str] = None, token: "str | bool | None" = None, weights: bool = True,
             local_only: bool = False, missing_ok: bool = False, progress: bool = True) -> Optional[str]:
    """The local directory of ``repo_id`` at ``revision``, downloaded (or found in the Hugging Face cache).

    ``weights=False`` fetches config and tokenizer files only. ``local_only`` never touches the network;
    ``missing_ok`` returns None instead of raising when the snapshot is unavailable. Errors are ModelError."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError:
        if missing_ok:
            return None
        raise ModelError(f"{repo_id}: not a local file or directory, and loading from the Hugging Face Hub needs "
                         f"huggingface_hub: pip install 'parrot-vlm[hub]'") from None
    what = f"{repo_id}" + (f"@{revision}" if revision else "")

    def fetch(patterns: List[str]) -> str:
        return str(huggingface_hub.snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns,
                                                 local_files_only=local_only))
    problem = None
    try:
        with _progress_bars(progress):
            d = fetch(CONFIG_PATTERNS + (SAFETENSORS_PATTERNS if weights else []))
            if weights and not _has_weights(d, ".safetensors"):  # an older repository: torch .bin shards
                d = fetch(CONFIG_PATTERNS + BIN_PATTERNS)
    except (LocalEntryNotFoundError, FileNotFoundError) as e:
        offline = local_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        problem = f"not in the Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE})" + \
            (" and downloads are off (HF_HUB_OFFLINE)" if offline else f": {e}")
    except GatedRepoError:  # (a RepositoryNotFoundError: first)
        problem = "gated repository; accept its licence on huggingface.co and log in (hf auth login) or set HF_TOKEN"
    except RepositoryNotFoundError:
        problem = "no such Hugging Face repository (or it is private: set HF_TOKEN)"
    except RevisionNotFoundError:
        problem = "no such revision in the repository"
    except (OSError, ValueError) as e:
        problem = f"download failed: {type(e).__name__}: {e}"
    if problem is None:
        return d
    if missing_ok:
        return None
    raise ModelError(f"{what}: {problem}"[:500])


def _clip_tag(clip: Optional[str]) -> str:
    """Part of a converted file's name for an explicit CLIP tower: its id, or a fingerprint of its directory."""
    if clip is None:
        return ""
    h = hashlib.sha256(clip.encode())
    if os.path.isdir(clip):
        from parrot.cache import _dir_fingerprint
        _dir_fingerprint(clip, h)
    return f"clip{h.hexdigest()[:12]}-"


def resolve_model(name_or_path: "os.PathLike[str] | str", *, revision: Optional[str] = None, dtype: str = "f16",
                  clip: "os.PathLike[str] | str | None" = None, token: "str | bool | None" = None,
                  progress: bool = True) -> str:
    """A loadable GGUF file for a model named by ``name_or_path``:

    - a ``.gguf`` (or any existing regular) file: returned as is;
    - a checkpoint directory: converted to ``dtype`` once into ``$PARROT_CACHE/converted/`` (reused while its
      files are unchanged);
    - a Hub id (``org/name``): its snapshot at ``revision`` fetched (see the module docs), then converted once
      into ``$PARROT_CACHE/hub/``.

    ``clip`` is a CLIP checkpoint (directory or Hub id) for a Parrot checkpoint without its vision tower; by
    default the tower its config names (``mm_vision_tower``) is used, from the Hub if it is an id."""
    from parrot.cache import cache_dir, converted_path
    from parrot.converter import convert

    path = os.fspath(name_or_path)
    clip = os.fspath(clip) if clip is not None else None
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        out = converted_path(path, dtype=dtype)
        out = os.path.join(os.path.dirname(out), _clip_tag(clip) + os.path.basename(out))
        source = path
    elif is_hub_id(path):
        snap = snapshot(path, revision=revision, token=token, progress=progress)
        assert snap is not None  # missing_ok is off: a failure raised
        source = snap
        commit = os.path.basename(os.path.normpath(source))  # snapshots/<commit>
        out = os.path.join(cache_dir(), "hub", path.replace("/", "--"), f"{_clip_tag(clip)}{commit}-{dtype}.gguf")
    else:
        raise FileNotFoundError(f"{path}: no such model file or checkpoint directory, and not a Hugging Face "
                                f"Hub id (org/name)")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        convert(source, out, clip=clip, dtype=dtype, force=True, progress=progress)
    return out
