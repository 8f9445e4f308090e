"""Encodings of everything a version stores: vocabularies, lists, histories, item table, meta.

Pure functions over numpy arrays and bytes; no Redis. The byte formats are described in the
package docstring (:mod:`recsys_serving.redis_layout`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import msgpack
import numpy as np

from recsys_serving.bundle import EVENT_CODES, ServingBundle

LIST_HEADER = 10  # u8 n + u8 flags + f32 hi + f32 lo
MAX_LIST_LENGTH = 255  # n is stored in one byte
MAX_HISTORY = 50
_HEAD = struct.Struct("<BBff")
_HEAD_DTYPE = np.dtype([("n", "u1"), ("flags", "u1"), ("hi", "<f4"), ("lo", "<f4")])


# --- encodings: vocabularies ----------------------------------------------------------------------
class Vocab:
    """External item ids ordered by frequency; ``encode`` maps ids to codes (-1 stays -1)."""

    _DENSE_LIMIT = 1 << 27  # lookup table up to 512 MB of int32 is never built beyond this

    def __init__(self, ids: np.ndarray):
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        max_id = int(self.ids.max()) if len(self.ids) else -1
        if max_id < self._DENSE_LIMIT:
            self._table = np.full(max_id + 2, -1, dtype=np.int64)
            self._table[self.ids] = np.arange(len(self.ids))
            self._sorted = None
        else:
            self._table = None
            self._sorted = np.argsort(self.ids, kind="stable")

    @classmethod
    def from_lists(cls, items: np.ndarray, chunk_rows: int = 20_000) -> Vocab:
        """Vocabulary of every id in a -1 padded (rows, N) matrix, most frequent first."""
        valid_max = int(items.max()) if items.size else -1
        if valid_max < cls._DENSE_LIMIT:
            counts = np.zeros(valid_max + 2, dtype=np.int64)
            for a in range(0, len(items), chunk_rows):
                counts += np.bincount(items[a : a + chunk_rows].ravel() + 1, minlength=len(counts))
            counts = counts[1:]  # drop the -1 padding
            present = np.flatnonzero(counts)
            order = np.argsort(-counts[present], kind="stable")
            return cls(present[order])
        uniq, counts = np.unique(items[items >= 0], return_counts=True)
        return cls(uniq[np.argsort(-counts, kind="stable")])

    def encode(self, items: np.ndarray) -> np.ndarray:
        if self._table is not None:
            sentinel = len(self._table) - 1  # holds -1
            inside = (items >= 0) & (items < sentinel)
            return self._table[np.where(inside, items, sentinel)]
        pos = np.searchsorted(self.ids, items, sorter=self._sorted)
        pos = np.minimum(pos, len(self.ids) - 1)
        codes = self._sorted[pos]
        return np.where((items >= 0) & (self.ids[codes] == items), codes, -1)


# --- encodings: lists -----------------------------------------------------------------------------
def _quantise(valid: np.ndarray, scores: np.ndarray):
    """Per-row 8-bit quantisation between the row's min and max: (q uint8, hi, lo)."""
    rows = len(valid)
    s = np.where(valid & np.isfinite(scores), scores, np.nan).astype(np.float64)
    has = valid.any(axis=1)
    hi = np.zeros(rows)
    lo = np.zeros(rows)
    if has.any():
        with np.errstate(all="ignore"):
            hi[has] = np.nan_to_num(np.nanmax(s[has], axis=1))
            lo[has] = np.nan_to_num(np.nanmin(s[has], axis=1))
    span = hi - lo
    with np.errstate(all="ignore"):
        q = np.where(span[:, None] > 0, (s - lo[:, None]) / span[:, None] * 255.0, 0.0)
    q = np.clip(np.nan_to_num(np.rint(q)), 0, 255).astype(np.int64)
    q[~valid] = 0
    return q, hi, lo


def encode_lists(codes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode (rows, N) code/score matrices; returns (flat uint8 payloads, int64 offsets rows+1).

    Rows are -1 padded at the end. Vectorised over the whole matrix. A payload is
    ``u8 n | u8 flags | f32 hi | f32 lo | scores | n varint item codes``. Scores are 8-bit
    levels; when they never increase down the list (flag 1) they are stored as the drops
    between neighbours, one nibble each, drops of 15 or more as escape nibble + a byte at the
    end of the nibbles (about half the bytes); otherwise (flag 0) one byte per score.
    """
    rows, width = codes.shape
    valid = codes >= 0
    n_valid = valid.sum(axis=1)
    q, hi, lo = _quantise(valid, scores)
    prev = np.concatenate([np.full((rows, 1), 255), q[:, :-1]], axis=1)
    drop = np.where(valid, prev - q, 0)
    mono = (drop >= 0).all(axis=1)
    nib = np.where(mono[:, None], np.minimum(drop, 15), 0)
    exc = mono[:, None] & valid & (drop >= 15)
    n_pairs = (n_valid + 1) // 2
    score_bytes = np.where(mono, n_pairs + exc.sum(axis=1), n_valid)

    c = np.where(valid, codes, 0)
    nb = (1 + (c >= 1 << 7) + (c >= 1 << 14) + (c >= 1 << 21)).astype(np.int64)
    nb[~valid] = 0
    lengths = LIST_HEADER + score_bytes + nb.sum(axis=1)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.zeros(int(offsets[-1]), dtype=np.uint8)
    starts = offsets[:-1]
    body = starts + LIST_HEADER

    head = np.zeros(rows, dtype=_HEAD_DTYPE)
    head["n"], head["flags"], head["hi"], head["lo"] = n_valid, mono, hi, lo
    out[(starts[:, None] + np.arange(LIST_HEADER)).ravel()] = head.view(np.uint8)
    # monotone rows: nibble pairs, then escaped drops
    if width % 2:
        nib = np.concatenate([nib, np.zeros((rows, 1), nib.dtype)], axis=1)
    pairs = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)
    jp = np.arange(pairs.shape[1])
    m = mono[:, None] & (jp < n_pairs[:, None])
    out[(body[:, None] + jp)[m]] = pairs[m]
    exc_rank = np.cumsum(exc, axis=1) - 1
    out[((body + n_pairs)[:, None] + exc_rank)[exc]] = drop[exc].astype(np.uint8)
    # other rows: one byte per score
    m = ~mono[:, None] & valid
    out[(body[:, None] + np.arange(width))[m]] = q[m].astype(np.uint8)

    pos = (body + score_bytes)[:, None] + np.cumsum(nb, axis=1) - nb
    for j in range(4):
        m = nb > j
        if not m.any():
            break
        byte = (c[m] >> (7 * j)) & 0x7F
        out[pos[m] + j] = (byte | np.where(nb[m] > j + 1, 0x80, 0)).astype(np.uint8)
    return out, offsets


def _varint_decode(b: np.ndarray, n: int) -> np.ndarray:
    ends = np.flatnonzero(b < 0x80)[:n]
    starts = np.empty(n, dtype=np.int64)
    if n:
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    length = ends - starts + 1
    low = np.zeros(len(b) + 4, dtype=np.int64)
    low[: len(b)] = b & 0x7F
    value = low[starts].copy()
    for j in (1, 2, 3):
        value += np.where(length > j, low[starts + j] << (7 * j), 0)
    return value


def decode_list(payload: bytes, vocab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A list payload back to (external item ids int64, scores float32), best first."""
    n, flags, hi, lo = _HEAD.unpack_from(payload, 0)
    if flags & 1:
        n_pairs = (n + 1) // 2
        raw = np.frombuffer(payload, dtype=np.uint8, count=n_pairs, offset=LIST_HEADER)
        nib = np.empty(2 * n_pairs, dtype=np.int64)
        nib[0::2], nib[1::2] = raw & 15, raw >> 4
        drop = nib[:n]
        esc = drop == 15
        n_exc = int(esc.sum())
        drop[esc] = np.frombuffer(payload, np.uint8, count=n_exc, offset=LIST_HEADER + n_pairs)
        q = 255 - np.cumsum(drop)
        at = LIST_HEADER + n_pairs + n_exc
    else:
        q = np.frombuffer(payload, dtype=np.uint8, count=n, offset=LIST_HEADER)
        at = LIST_HEADER + n
    codes = _varint_decode(np.frombuffer(payload, dtype=np.uint8, offset=at), n)
    scores = (lo + q.astype(np.float32) * np.float32((hi - lo) / 255.0)).astype(np.float32)
    return vocab[codes], scores


# --- encodings: history ---------------------------------------------------------------------------
def event_codes(events: np.ndarray) -> np.ndarray:
    """History events (strings or int codes) as int8 codes into EVENT_CODES."""
    events = np.asarray(events)
    if events.dtype.kind in "iu":
        if events.size and (events.min() < 0 or events.max() >= len(EVENT_CODES)):
            raise ValueError(f"history_events: codes must be in 0..{len(EVENT_CODES) - 1}")
        return events.astype(np.int8)
    names = np.asarray(events, dtype=str)
    codes = np.full(len(names), -1, dtype=np.int8)
    for i, name in enumerate(EVENT_CODES):  # three event types, not a loop over rows
        codes[names == name] = i
    if (codes < 0).any():
        bad = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(
            f"history_events[{bad}]: unknown event {names[bad]!r} (want one of {EVENT_CODES})"
        )
    return codes


def encode_history(
    lengths: np.ndarray, starts: np.ndarray, items: np.ndarray, events: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Payload per user: u8 n | n x i64 items | n x i64 timestamps | n x u8 event codes."""
    n = np.minimum(lengths, MAX_HISTORY).astype(np.int64)
    size = 1 + 17 * n
    offsets = np.zeros(len(n) + 1, dtype=np.int64)
    np.cumsum(size, out=offsets[1:])
    out = np.zeros(int(offsets[-1]), dtype=np.uint8)
    at = offsets[:-1]
    out[at] = n.astype(np.uint8)
    # element e of user u sits at src = starts[u] + e
    owner = np.repeat(np.arange(len(n)), n)
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    src = starts[owner] + within
    base = at[owner]
    nn = n[owner]
    k8 = np.arange(8)
    item_pos = (base + 1 + 8 * within)[:, None] + k8
    out[item_pos.ravel()] = items[src].astype("<i8").view(np.uint8)
    ts_pos = (base + 1 + 8 * nn + 8 * within)[:, None] + k8
    out[ts_pos.ravel()] = ts[src].astype("<i8").view(np.uint8)
    out[base + 1 + 16 * nn + within] = events[src].astype(np.uint8)
    return out, offsets


def decode_history(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items int64, event codes uint8, timestamps int64), newest first."""
    n = payload[0]
    items = np.frombuffer(payload, dtype="<i8", count=n, offset=1)
    ts = np.frombuffer(payload, dtype="<i8", count=n, offset=1 + 8 * n)
    ev = np.frombuffer(payload, dtype=np.uint8, count=n, offset=1 + 16 * n)
    return items, ev, ts


# --- encodings: buckets, popular lists, item table, meta -----------------------------------------
def bucket_of(bounds: np.ndarray, ident: int) -> int:
    """The bucket that would hold ``ident`` (-1: below every bucket, so absent)."""
    return int(np.searchsorted(bounds, ident, side="right")) - 1


def bucket_blob(ids: np.ndarray, payload: np.ndarray, offsets: np.ndarray) -> bytes:
    """One bucket: ids ascending, ``offsets`` (len(ids)+1) delimit each id's payload."""
    count = len(ids)
    header = 4 + 8 * count + 4 * (count + 1)
    rel = (offsets - offsets[0] + header).astype("<u4")
    return b"".join(
        (
            struct.pack("<I", count),
            ids.astype("<i8").tobytes(),
            rel.tobytes(),
            payload[offsets[0] : offsets[-1]].tobytes(),
        )
    )


def encode_pairs(items: np.ndarray, scores: np.ndarray) -> bytes:
    return np.asarray(items, "<i8").tobytes() + np.asarray(scores, "<f4").tobytes()


def decode_pairs(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = len(raw) // 12
    return (
        np.frombuffer(raw, dtype="<i8", count=n),
        np.frombuffer(raw, dtype="<f4", count=n, offset=8 * n),
    )


_EMPTY_I8 = np.zeros(0, "<i8")


@dataclass(frozen=True)
class ItemTable:
    """Item metadata sorted by id; ``lookup`` returns row positions (-1 when unknown).

    ``tree_ids``/``tree_parents``: the category tree (parent -1 for roots; empty in versions
    published before the tree was).
    """

    ids: np.ndarray
    category: np.ndarray
    price: np.ndarray
    available: np.ndarray
    tree_ids: np.ndarray = field(default_factory=lambda: _EMPTY_I8)
    tree_parents: np.ndarray = field(default_factory=lambda: _EMPTY_I8)

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        if not len(self.ids):
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, item_ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == item_ids, pos, -1)


def encode_items(bundle: ServingBundle) -> dict[str, bytes]:
    order = np.argsort(bundle.item_ids, kind="stable")
    return {
        "ids": np.asarray(bundle.item_ids, "<i8")[order].tobytes(),
        "category": np.asarray(bundle.item_category, "<i8")[order].tobytes(),
        "price": np.asarray(bundle.item_price, "<f4")[order].tobytes(),
        "available": np.asarray(bundle.item_available, "i1")[order].tobytes(),
        "tree_ids": np.asarray(bundle.category_ids, "<i8").tobytes(),
        "tree_parents": np.asarray(bundle.category_parents, "<i8").tobytes(),
    }


def decode_items(fields: dict[bytes, bytes]) -> ItemTable:
    if not fields:
        return ItemTable(*(np.zeros(0, dt) for dt in ("<i8", "<i8", "<f4", "i1")))
    return ItemTable(
        ids=np.frombuffer(fields[b"ids"], "<i8"),
        category=np.frombuffer(fields[b"category"], "<i8"),
        price=np.frombuffer(fields[b"price"], "<f4"),
        available=np.frombuffer(fields[b"available"], "i1"),
        tree_ids=np.frombuffer(fields.get(b"tree_ids", b""), "<i8"),
        tree_parents=np.frombuffer(fields.get(b"tree_parents", b""), "<i8"),
    )


def jsonable(obj):
    """JSON/msgpack-safe copy of metrics and params (numpy scalars, nan)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def encode_meta(meta: dict) -> bytes:
    return msgpack.packb(meta, use_bin_type=True)


def decode_meta(raw: bytes) -> dict:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
