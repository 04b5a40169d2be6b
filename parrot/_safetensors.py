"""Checkpoint tensors read without torch: safetensors files (and, through :mod:`parrot._torch_pickle`, torch's
``pytorch_model*.bin``), validated against the file sizes before anything is read.

A tensor is a :class:`TensorInfo` — a byte range of a regular file plus dtype and shape. :class:`Checkpoint`
reads element ranges of it with explicit ``pread``-style reads into fresh buffers (no memory map: pages of a
mapping stay resident and counted in the converter's RSS until it ends; a read buffer is freed as soon as the
converter drops it), and tells the kernel it may drop the file pages it has read, so converting a 16 GB
checkpoint neither holds 16 GB nor fills the page cache with it.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from parrot.errors import ModelError

# safetensors dtype -> (numpy dtype used to hold the raw bits, bytes per element)
_DTYPES = {
    "F32": (np.float32, 4),
    "F16": (np.float16, 2),
    "BF16": (np.uint16, 2),  # raw bits; widen with bf16_to_f32
    "F64": (np.float64, 8),
    "I64": (np.int64, 8),
    "I32": (np.int32, 4),
    "I16": (np.int16, 2),
    "I8": (np.int8, 1),
    "U8": (np.uint8, 1),
    "BOOL": (np.bool_, 1),
}
FLOAT_DTYPES = ("F32", "F16", "BF16")
MAX_HEADER_BYTES = 100 * 1024 * 1024


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Raw bfloat16 bits (uint16) -> float32, exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class TensorInfo:
    """One tensor: ``nbytes`` bytes at byte ``offset`` of the file ``path``."""

    __slots__ = ("name", "dtype", "shape", "offset", "nbytes", "path")

    def __init__(self, name: str, dtype: str, shape: Tuple[int, ...], offset: int, nbytes: int, path: str):
        self.name, self.dtype, self.shape, self.offset, self.nbytes, self.path = \
            name, dtype, shape, offset, nbytes, path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def read_safetensors_header(path: str) -> Dict[str, TensorInfo]:
    """The tensors of one .safetensors file, every header field checked: offsets are integers inside the file
    and match dtype and shape."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > MAX_HEADER_BYTES:
                raise ModelError(f"{path}: corrupt safetensors header: header length {n} at byte offset 0 "
                                 f"exceeds the file size {size}")
            raw = f.read(n)
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path}: corrupt safetensors header (bytes 8..{8 + n}): {e}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: corrupt safetensors header: not a JSON object")
    data_start = 8 + n
    data_size = size - data_start
    header.pop("__metadata__", None)
    infos: Dict[str, TensorInfo] = {}
    for name, spec in header.items():
        if not isinstance(spec, dict):
            raise ModelError(f"{path}: corrupt safetensors header entry for tensor '{name}': not an object")
        dtype, shape, offs = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ModelError(f"{path}: tensor '{name}' has unsupported dtype {dtype!r}"[:300])
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape) or len(shape) > 8:
            raise ModelError(f"{path}: tensor '{name}': shape {shape!r} is not a list of non-negative "
                             f"integers"[:300])
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_count(o) for o in offs)):
            raise ModelError(f"{path}: tensor '{name}': data_offsets {offs!r} are not two non-negative "
                             f"integers"[:300])
        lo, hi = offs
        want = math.prod(shape) * _DTYPES[dtype][1]
        if lo > hi or hi - lo != want:
            raise ModelError(f"{path}: tensor '{name}': data offsets [{lo}, {hi}) do not match shape "
                             f"{shape} of {dtype}")
        if hi > data_size:
            raise ModelError(f"{path}: truncated: tensor '{name}' needs bytes up to offset "
                             f"{data_start + hi} but the file has {size} bytes")
        infos[name] = TensorInfo(name, dtype, tuple(shape), data_start + lo, hi - lo, path)
    return infos


class Checkpoint:
    """All tensors of one or more checkpoint directories (``tensors``: name -> TensorInfo) and the reads."""

    def __init__(self) -> None:
        self.tensors: Dict[str, TensorInfo] = {}
        self.files: List[str] = []
        self._fds: Dict[str, int] = {}

    def add_file(self, path: str, infos: Dict[str, TensorInfo]) -> None:
        self.files.append(path)
        for name, info in infos.items():
            if name in self.tensors:
                raise ModelError(f"{path}: tensor '{name}' also appears in {self.tensors[name].path}")
            self.tensors[name] = info

    def read(self, info: TensorInfo, first: int = 0, count: Optional[int] = None) -> np.ndarray:
        """Elements [first, first + count) of the flattened tensor, as a fresh array of its raw dtype."""
        np_dtype, size = _DTYPES[info.dtype]
        count = info.numel - first if count is None else count
        buf: np.ndarray = np.empty(count, dtype=np_dtype)
        view = buf.view(np.uint8).data  # a writable byte view of the fresh buffer
        fd = self._fds.get(info.path)
        if fd is None:
            try:
                fd = self._fds[info.path] = os.open(info.path, os.O_RDONLY)
            except OSError as e:
                raise ModelError(f"{info.path}: cannot open: {e.strerror}") from None
        start = pos = info.offset + first * size
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], pos) if hasattr(os, "preadv") else \
                _pread_into(fd, view[done:], pos)
            if n <= 0:
                raise ModelError(f"{info.path}: tensor '{info.name}': file ended at byte {pos} (it was "
                                 f"truncated while being read)")
            done += n
            pos += n
        if hasattr(os, "posix_fadvise"):  # the pages read are not needed again
            os.posix_fadvise(fd, start, done, os.POSIX_FADV_DONTNEED)
        return buf

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pread_into(fd: int, view: memoryview, pos: int) -> int:
    data = os.pread(fd, len(view), pos)
    view[:len(data)] = data
    return len(data)


def _read_index(index: str) -> Dict[str, str]:
    try:
        with open(index, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"{index}: cannot read the shard index: {e}") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelError(f"{index}: 'weight_map' is not an object mapping tensor names to shard file names")
    for shard in set(weight_map.values()):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ModelError(f"{index}: shard name {shard!r} is not a file name in the checkpoint directory"[:300])
    return weight_map


def open_checkpoint(directory: str, ckpt: Optional[Checkpoint] = None) -> Checkpoint:
    """All tensors of a Hugging Face checkpoint directory: safetensors (model.safetensors.index.json shards or
    every *.safetensors), else torch .bin (pytorch_model.bin.index.json shards or every *.bin). Tensors are
    added to ``ckpt`` when given."""
    directory = str(directory)
    ckpt = ckpt if ckpt is not None else Checkpoint()
    weight_map: Optional[Dict[str, str]] = None
    index: Optional[str] = None
    names: List[str] = []
    for index_name, ext in (("model.safetensors.index.json", ".safetensors"), ("pytorch_model.bin.index.json", ".bin")):
        path = os.path.join(directory, index_name)
        if os.path.exists(path):
            index, weight_map = path, _read_index(path)
            names = sorted(set(weight_map.values()))
            break
        names = sorted(n for n in os.listdir(directory) if n.endswith(ext) and not n.startswith("training_args"))
        if names:
            break
    if not names:
        raise ModelError(f"{directory}: no *.safetensors or pytorch_model*.bin files found")
    before = set(ckpt.tensors)
    for n in names:
        p = os.path.join(directory, n)
        if not os.path.isfile(p):
            raise ModelError(f"{index}: names shard '{n}', which does not exist")
        if n.endswith(".safetensors"):
            ckpt.add_file(p, read_safetensors_header(p))
        else:
            from parrot._torch_pickle import read_bin
            entries, _ = read_bin(p)
            ckpt.add_file(p, {name: TensorInfo(name, dt, shape, off, nb, p) for name, dt, shape, off, nb in entries})
    if weight_map is not None:
        missing = [k for k in weight_map if k not in ckpt.tensors or k in before]
        if missing:
            raise ModelError(f"{index}: lists tensors that no shard holds: {', '.join(sorted(missing)[:10])}")
    return ckpt
