"""A small, strict reader of safetensors files (no torch): header validated against the file size, tensors
returned as read-only NumPy views of a memory map, so a converter streams tensor by tensor."""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

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


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Raw bfloat16 bits (uint16) -> float32, exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class TensorInfo:
    __slots__ = ("name", "dtype", "shape", "begin", "end", "file")

    def __init__(self, name: str, dtype: str, shape: Tuple[int, ...], begin: int, end: int, file: "SafetensorsFile"):
        self.name, self.dtype, self.shape, self.begin, self.end, self.file = name, dtype, shape, begin, end, file

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """One .safetensors file: `infos` maps names to TensorInfo; `array(name)` is a lazy memmap view."""

    def __init__(self, path: str):
        self.path = str(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ModelError(f"{self.path}: not a safetensors file (only {size} bytes)")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 100 * 1024 * 1024:
                    raise ModelError(f"{self.path}: corrupt safetensors header: header length {n} at byte offset 0 "
                                     f"exceeds the file size {size}")
                raw = f.read(n)
        except OSError as e:
            raise ModelError(f"{self.path}: cannot read: {e.strerror or e}") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{self.path}: corrupt safetensors header (bytes 8..{8 + n}): {e}") from None
        if not isinstance(header, dict):
            raise ModelError(f"{self.path}: corrupt safetensors header: not a JSON object")
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.metadata = header.pop("__metadata__", None) or {}
        self.infos: Dict[str, TensorInfo] = {}
        for name, spec in header.items():
            try:
                dtype, shape, (b_, e_) = spec["dtype"], tuple(int(s) for s in spec["shape"]), spec["data_offsets"]
                lo, hi = int(b_), int(e_)
            except (KeyError, TypeError, ValueError):
                raise ModelError(f"{self.path}: corrupt safetensors header entry for tensor '{name}'") from None
            if dtype not in _DTYPES:
                raise ModelError(f"{self.path}: tensor '{name}' has unsupported dtype {dtype}")
            want = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1] if shape else _DTYPES[dtype][1]
            if any(s < 0 for s in shape) or not (0 <= lo <= hi) or hi - lo != want:
                raise ModelError(f"{self.path}: tensor '{name}': data offsets [{lo}, {hi}) do not match shape "
                                 f"{list(shape)} of {dtype}")
            if hi > data_size:
                raise ModelError(f"{self.path}: truncated: tensor '{name}' needs bytes up to offset "
                                 f"{self.data_start + hi} but the file has {size} bytes")
            self.infos[name] = TensorInfo(name, dtype, shape, lo, hi, self)
        self._map: Optional[np.ndarray] = None

    def array(self, name: str) -> np.ndarray:
        info = self.infos[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._map[self.data_start + info.begin:self.data_start + info.end]
        out: np.ndarray = raw.view(_DTYPES[info.dtype][0]).reshape(info.shape)
        return out

    def close(self) -> None:
        self._map = None


def open_checkpoint(directory: str) -> Tuple[Dict[str, TensorInfo], List[SafetensorsFile]]:
    """All tensors of a Hugging Face checkpoint directory: sharded (model.safetensors.index.json) or not."""
    directory = str(directory)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as fi:
                weight_map = json.load(fi)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{index}: cannot read the shard index: {e}") from None
        names = sorted(set(weight_map.values()))
    else:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
        weight_map = None
    if not names:
        raise ModelError(f"{directory}: no *.safetensors files found")
    files = []
    for n in names:
        p = os.path.join(directory, n)
        if not os.path.exists(p):
            raise ModelError(f"{index}: names shard '{n}', which does not exist")
        files.append(SafetensorsFile(p))
    tensors: Dict[str, TensorInfo] = {}
    for f in files:
        for name, info in f.infos.items():
            if name in tensors:
                raise ModelError(f"{f.path}: tensor '{name}' also appears in {tensors[name].file.path}")
            tensors[name] = info
    if weight_map is not None:
        missing = [k for k in weight_map if k not in tensors]
        if missing:
            raise ModelError(f"{index}: lists tensors that no shard holds: {', '.join(sorted(missing)[:10])}")
    return tensors, files


def iter_names(tensors: Dict[str, TensorInfo], prefix: str) -> Iterator[str]:
    return (n for n in tensors if n.startswith(prefix))
