"""A session model's arrays in Redis: raw little-endian bytes in chunks, described by the meta.

Each array is stored as ``ceil(nbytes / chunk_bytes)`` strings
``{p}:v:<v>:weights:<model>:<array>:<chunk>`` under the version's prefix (so cleanup and rollback
treat them like the lists), and the model's entry in the version meta holds its spec::

    {"digest": hex, "chunk_bytes": int,
     "arrays": {name: {"dtype": "<f4", "shape": [...], "chunks": int}, ...}}

Chunks (4 MiB) keep every command small: a 235k x 224 float32 output layer (210 MB) in one
string would hold Redis for the whole transfer and sit near its 512 MB bulk limit. The digest
(of every array's bytes) lets the service reuse weights it already holds when a new version, or
a rollback, serves the same network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from recsys_serving.bundle import GruWeights

CHUNK_BYTES = 4 << 20
ITEM_IDS = "item_ids"  # the column -> external id map, stored beside the network's arrays


def _as_stored(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    dtype = "<i8" if arr.dtype.kind in "iu" else "<f4"
    if name != ITEM_IDS and arr.ndim and dtype != "<f4":
        raise ValueError(f"weights.{name}: want float32 values, got {arr.dtype}")
    # not np.ascontiguousarray: it turns the 0-d scalars (input_mode, n_layers) into 1-d
    return np.asarray(arr, dtype=dtype, order="C")


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1).view(np.uint8)


def weight_arrays(gru: GruWeights) -> dict[str, np.ndarray]:
    """Every array that is published for ``gru`` (item ids included), as stored."""
    named = {ITEM_IDS: gru.item_ids, **gru.arrays}
    return {name: _as_stored(name, arr) for name, arr in named.items()}


def encode_weights(
    gru: GruWeights, chunk_bytes: int = CHUNK_BYTES
) -> tuple[dict, Iterator[tuple[str, int, bytes]]]:
    """(spec for the meta, generator of (array name, chunk index, bytes)) of one network."""
    arrays = weight_arrays(gru)
    digest = hashlib.blake2b(digest_size=16)
    spec_arrays = {}
    for name, arr in arrays.items():
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        digest.update(_bytes_of(arr))
        spec_arrays[name] = {
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "chunks": max(1, -(-arr.nbytes // chunk_bytes)),
        }
    spec = {"digest": digest.hexdigest(), "chunk_bytes": chunk_bytes, "arrays": spec_arrays}

    def chunks():
        for name, arr in arrays.items():
            raw = _bytes_of(arr)
            for c in range(spec_arrays[name]["chunks"]):
                yield name, c, raw[c * chunk_bytes : (c + 1) * chunk_bytes].tobytes()

    return spec, chunks()


def weights_nbytes(spec: dict) -> int:
    return sum(
        int(np.prod(a["shape"], dtype=np.int64)) * np.dtype(a["dtype"]).itemsize
        for a in spec["arrays"].values()
    )


def decode_array(info: dict, chunks: list[bytes | None], where: str) -> np.ndarray:
    """One array from its chunks, in a fresh (writable, aligned) buffer."""
    dtype = np.dtype(info["dtype"])
    shape = tuple(int(s) for s in info["shape"])
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if any(c is None for c in chunks) or sum(len(c) for c in chunks) != nbytes:
        raise ValueError(f"{where}: stored chunks do not add up to {shape} {dtype} (missing key?)")
    out = np.empty(shape, dtype=dtype)
    raw = _bytes_of(out)
    at = 0
    for c in chunks:
        raw[at : at + len(c)] = np.frombuffer(c, dtype=np.uint8)
        at += len(c)
    return out
