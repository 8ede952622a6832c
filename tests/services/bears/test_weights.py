"""The checkpoint reader: a torch .pth read without torch, and nothing else allowed to run."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from society5.services.bears.vision.weights import (
    LEGACY_MAGIC,
    UnsafeCheckpoint,
    default_weights_path,
    load_checkpoint,
    load_state_dict,
)


def test_shipped_weights_load_as_float32_arrays() -> None:
    sd = load_state_dict(default_weights_path())
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_fc.weight"].dtype == np.float32
    assert len([k for k in sd if k.endswith("_project_conv.weight")]) == 16
    assert all(np.isfinite(v).all() for v in sd.values() if v.dtype.kind == "f")


def _legacy(obj_bytes: bytes) -> bytes:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {"little_endian": True}))
    return head + obj_bytes + pickle.dumps([], protocol=2)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned > /tmp/s5-pwned",))


def test_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy(pickle.dumps({"w": _Evil()}, protocol=2)))
    with pytest.raises(UnsafeCheckpoint, match="refusing to load global"):
        load_checkpoint(path)
    assert not Path("/tmp/s5-pwned").exists()


def test_a_zip_checkpoint_with_an_evil_global_is_refused(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x89PNG not a checkpoint")
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)


def test_a_handmade_legacy_checkpoint_round_trips(tmp_path: Path) -> None:
    """A state dict written in torch's legacy layout by hand (strided tensor, offset) reads back right."""

    data = np.arange(12, dtype=np.float32)
    # a raw protocol-2 pickle program: OrderedDict {"w": _rebuild_tensor_v2(storage, offset 2, size (2, 3),
    # stride (1, 4), False, None)}, the storage a persistent id ("storage", FloatStorage, "k1", "cpu", 12)
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n"
    storage_pid = (b"(X\x07\x00\x00\x00storage" + b"ctorch\nFloatStorage\n" + b"X\x02\x00\x00\x00k1"
                   + b"X\x03\x00\x00\x00cpu" + b"K\x0c" + b"N" + b"tQ")
    tensor = (rebuild + b"(" + storage_pid + b"K\x02" + b"K\x02K\x03\x86" + b"K\x01K\x04\x86" + b"\x89"
              + b"N" + b"tR")
    program = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w" + tensor + b"u.")
    blob = _legacy(b"")[: -len(pickle.dumps([], protocol=2))]
    blob += program + pickle.dumps(["k1"], protocol=2) + struct.pack("<q", 12) + data.tobytes()
    path = tmp_path / "hand.pth"
    path.write_bytes(blob)
    sd = load_checkpoint(path)
    np.testing.assert_array_equal(sd["w"], np.array([[2, 6, 10], [3, 7, 11]], np.float32))
