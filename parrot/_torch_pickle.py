"""``pytorch_model*.bin`` (torch.save's zip + pickle format) read without torch and without running the pickle.

A torch checkpoint is a zip archive: ``<name>/data.pkl`` is a pickle of the state dict, and each tensor's
storage is a separate, uncompressed member ``<name>/data/<key>``. The pickle rebuilds tensors by calling
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``, where ``storage`` is a persistent id
``('storage', torch.HalfStorage, key, location, numel)``.

:class:`_RestrictedUnpickler` resolves exactly those globals to local functions that record *where* each tensor's
bytes are (member, byte offset in the archive, dtype, shape); every other global — ``os.system``,
``builtins.eval``, any class — is refused with a :class:`~parrot.errors.ModelError`, so loading a file never runs
code from it. Nothing is read but the pickle itself; the converter later reads each tensor's bytes straight from
the archive.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import IO, Any, Dict, List, NamedTuple, Tuple

from parrot.errors import ModelError

# torch's legacy typed-storage classes as named in the pickle -> safetensors dtype name, bytes per element
STORAGE_DTYPES = {
    "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2), "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4), "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1), "BoolStorage": ("BOOL", 1),
}
MAX_PICKLE_BYTES = 256 * 1024 * 1024  # a state dict's pickle is a few MB even for 14B models


# Immutable (named tuples have no __dict__): a pickle's BUILD opcode cannot change what these record.
class _Storage(NamedTuple):
    dtype: str                 # safetensors dtype name
    itemsize: int              # bytes per element
    key: str                   # member data/<key> of the archive
    numel: int                 # elements in the storage


class _StorageType(NamedTuple):
    """Stands for ``torch.HalfStorage`` etc. inside the pickle."""
    name: str


class BinTensor(NamedTuple):
    """Where one tensor's bytes are: ``storage``, element offset into it, shape (C-contiguous)."""
    storage: _Storage
    offset: int
    shape: Tuple[int, ...]


def _ints(x: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(type(v) is int and v >= 0 for v in x):
        raise ModelError(f"{what} is not a tuple of non-negative integers: {x!r}"[:300])
    return tuple(x)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_rest: Any) -> BinTensor:
    if type(storage) is not _Storage or type(storage_offset) is not int or storage_offset < 0:
        raise ModelError("_rebuild_tensor_v2 called with arguments that are not a storage and an offset")
    shape, strides = _ints(size, "tensor size"), _ints(stride, "tensor stride")
    if len(shape) != len(strides):
        raise ModelError(f"tensor size {shape} and stride {strides} differ in length")
    expect = 1
    for n, s in zip(reversed(shape), reversed(strides)):  # C-contiguous (what state dicts hold)
        if n > 1 and s != expect:
            raise ModelError(f"tensor of size {list(shape)} has non-contiguous strides {list(strides)}; "
                             f"save it with .contiguous()")
        expect *= n
    if storage_offset + expect > storage.numel:
        raise ModelError(f"tensor of size {list(shape)} at offset {storage_offset} overruns its storage "
                         f"'{storage.key}' of {storage.numel} elements")
    return BinTensor(storage, storage_offset, shape)


def _rebuild_parameter(data: Any, *_rest: Any) -> BinTensor:
    if type(data) is not BinTensor:
        raise ModelError("_rebuild_parameter called on something that is not a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str):
        super().__init__(io.BytesIO(data))
        self.where = where
        self.storages: Dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise ModelError(f"{self.where}: refuses to load global '{module}.{name}' (only tensors and "
                         f"OrderedDict may appear in a checkpoint; this file could run code)"[:400])

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and type(pid[1]) is _StorageType and pid[1].name in STORAGE_DTYPES
                and isinstance(pid[2], str) and type(pid[4]) is int
                and pid[4] >= 0):
            raise ModelError(f"{self.where}: unexpected persistent id {pid!r}"[:300])
        st = self.storages.get(pid[2])
        if st is None:
            dtype, itemsize = STORAGE_DTYPES[pid[1].name]
            st = self.storages[pid[2]] = _Storage(dtype, itemsize, pid[2], pid[4])
        elif (st.dtype, st.numel) != (STORAGE_DTYPES[pid[1].name][0], pid[4]):
            raise ModelError(f"{self.where}: storage '{pid[2]}' is named twice with different types or sizes")
        return st


def _member_data_offset(f: IO[bytes], info: zipfile.ZipInfo, path: str) -> int:
    """Absolute offset of a stored member's first byte (after its local header)."""
    f.seek(info.header_offset)
    head = f.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise ModelError(f"{path}: corrupt zip local header for '{info.filename}' at byte {info.header_offset}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return int(info.header_offset) + 30 + int(name_len) + int(extra_len)


def read_bin(path: str) -> Tuple[List[Tuple[str, str, Tuple[int, ...], int, int]], List[str]]:
    """The tensors of one torch zip checkpoint: ``[(name, dtype, shape, byte offset in the file, nbytes)]``,
    and the names of entries that are not tensors (ignored)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{path}: not a torch zip checkpoint ({e}); legacy non-zip .bin files are not "
                         f"supported, re-save with torch>=1.6") from None
    with zf, open(path, "rb") as f:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ModelError(f"{path}: expected one data.pkl in the archive, found {len(pkl)}")
        root = pkl[0][:-len("data.pkl")]
        if infos[pkl[0]].file_size > MAX_PICKLE_BYTES:
            raise ModelError(f"{path}: data.pkl is {infos[pkl[0]].file_size} bytes (limit {MAX_PICKLE_BYTES})")
        where = f"{path}:{pkl[0]}"
        up = _RestrictedUnpickler(zf.read(pkl[0]), where)
        try:
            state = up.load()
        except ModelError:
            raise
        except Exception as e:  # any malformed pickle (truncated, bad opcode, wrong arguments)
            raise ModelError(f"{where}: corrupt pickle: {type(e).__name__}: {e}"[:400]) from None
        if not isinstance(state, dict):
            raise ModelError(f"{where}: the pickle is a {type(state).__name__}, not a state dict")
        out, skipped = [], []
        member_offset: Dict[str, int] = {}
        for name, t in state.items():
            if not isinstance(name, str):
                raise ModelError(f"{where}: state dict key {name!r} is not a string"[:300])
            if type(t) is not BinTensor:
                skipped.append(name)
                continue
            st = t.storage
            member = f"{root}data/{st.key}"
            info = infos.get(member)
            if info is None:
                raise ModelError(f"{path}: tensor '{name}' names storage '{member}', which the archive lacks")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ModelError(f"{path}: storage '{member}' is compressed; torch writes storages uncompressed")
            if info.file_size != st.numel * st.itemsize:
                raise ModelError(f"{path}: storage '{member}' holds {info.file_size} bytes, the pickle says "
                                 f"{st.numel} x {st.itemsize}")
            if member not in member_offset:
                member_offset[member] = _member_data_offset(f, info, path)
            n = 1
            for s in t.shape:
                n *= s
            out.append((name, st.dtype, t.shape, member_offset[member] + t.offset * st.itemsize, n * st.itemsize))
        return out, skipped
