"""Model bytes: one ``.npz`` archive of plain numpy arrays plus a JSON metadata entry.

No pickle anywhere: arrays are written and read with ``allow_pickle=False`` and the metadata
(model name, params, sizes) is JSON stored as a uint8 array, so loading untrusted bytes can
never execute code.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import scipy.sparse as sp

FORMAT_VERSION = 1
_META_KEY = "__meta__"


def pack(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """Serialise ``arrays`` and JSON-able ``meta`` into one npz archive."""
    if _META_KEY in arrays:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    meta = {"format_version": FORMAT_VERSION, **meta}
    blob = np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **{_META_KEY: blob}, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`pack`; raises ValueError on anything that is not such an archive."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile/npy errors vary; the caller only needs "not a model"
        raise ValueError(f"model bytes: not a recsys model archive ({exc})") from exc
    if _META_KEY not in arrays:
        raise ValueError("model bytes: archive has no metadata entry")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"model bytes: format_version {meta.get('format_version')} is not {FORMAT_VERSION}"
        )
    return arrays, meta


def csr_to_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"model metadata: {type(obj).__name__} is not JSON-serialisable")
