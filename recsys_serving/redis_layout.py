"""The Redis layout: key names, encodings, the writer and the reader, side by side.

Every published version lives under its own prefix and is never modified once complete:

    {p}:current                     version being served (string)
    {p}:previous                    version kept for rollback
    {p}:seq                         INCR counter that numbers versions
    {p}:channel                     pub/sub: "version:<v>", "rollback:<v>", "control", "flush"
    {p}:control                     hash of admin overrides: "ab_experiment" -> JSON,
                                    "default_model@<v>" -> model name (scoped to one version)
    {p}:feedback                    stream of feedback events
    {p}:v:<v>:meta                  msgpack: models, metrics, families, default model, experiment
                                    (written last: a version without meta is incomplete)
    {p}:v:<v>:vocab:<family>        little-endian int64 array: item code -> external item id
    {p}:v:<v>:bounds:<family>       little-endian int64 array: first id of each bucket
    {p}:v:<v>:blob:<family>:<b>     bucket blob of per-id lists (see below)
    {p}:v:<v>:popular               hash "all" | "<category id>" -> int64 items + float32 scores
    {p}:v:<v>:items                 hash "ids","category","price","available" -> raw arrays

Families: ``rec:<model>`` (per-user top-N), ``sim:<model>`` (per-item neighbours), ``hist``.

Per-id lists are grouped into buckets of contiguous ids stored as one string each (the first
id of every bucket is in ``{p}:v:<v>:bounds:<family>``), so a list costs 12 bytes of index
instead of a hash entry's ~60, and blobs are filled up to an allocator size class:

    u32 count | count x i64 ids (ascending) | (count+1) x u32 offsets into the blob | payloads

A Lua script binary-searches the ids and returns one payload in a single round trip.
A list payload is ``u8 n | u8 flags | f32 hi | f32 lo | scores | n varint item codes``;
codes index the family's vocabulary, which is ordered by frequency so that the items most lists
share take one or two bytes. Scores are quantised linearly between the list's own min and max
(error at most (hi - lo) / 510), stored as nibble-sized drops when they never increase down
the list; the order of items is stored exactly.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack
import numpy as np

from recsys_serving.bundle import EVENT_CODES, ModelLists, ServingBundle

FORMAT_VERSION = 1
LIST_HEADER = 10  # u8 n + u8 flags + f32 hi + f32 lo
MAX_LIST_LENGTH = 255  # n is stored in one byte
MAX_HISTORY = 50
DEFAULT_BLOB_BYTES = 28_600  # jemalloc class 28 KiB minus the sds header; < 32 KiB
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HEAD = struct.Struct("<BBff")
_HEAD_DTYPE = np.dtype([("n", "u1"), ("flags", "u1"), ("hi", "<f4"), ("lo", "<f4")])


# --- key names ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """Every key name of one deployment (one prefix)."""

    prefix: str = "recsys"

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def previous(self) -> str:
        return f"{self.prefix}:previous"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:channel"

    @property
    def control(self) -> str:
        return f"{self.prefix}:control"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}:feedback"

    def version_prefix(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:"

    def meta(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:meta"

    def vocab(self, version: str, family: str) -> str:
        return f"{self.prefix}:v:{version}:vocab:{family}"

    def bounds(self, version: str, family: str) -> str:
        return f"{self.prefix}:v:{version}:bounds:{family}"

    def blob(self, version: str, family: str, bucket: int) -> str:
        return f"{self.prefix}:v:{version}:blob:{family}:{bucket}"

    def popular(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:popular"

    def items(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:items"


def rec_family(model: str) -> str:
    return f"rec:{model}"


def sim_family(model: str) -> str:
    return f"sim:{model}"


HIST_FAMILY = "hist"
CONTROL_AB = "ab_experiment"


def control_default_field(version: str) -> str:
    return f"default_model@{version}"


# --- Lua ------------------------------------------------------------------------------------------
# KEYS[1] bucket blob; ARGV[1] id. Returns the payload or nil.
LOOKUP_LUA = """
local key = KEYS[1]
local id = tonumber(ARGV[1])
local head = redis.call('GETRANGE', key, 0, 3)
if string.len(head) < 4 then return false end
local n = struct.unpack('<I4', head)
local ids = redis.call('GETRANGE', key, 4, 3 + 8 * n)
local lo, hi = 1, n
while lo <= hi do
  local mid = math.floor((lo + hi) / 2)
  local v = struct.unpack('<i8', ids, 8 * (mid - 1) + 1)
  if v == id then
    local at = 4 + 8 * n + 4 * (mid - 1)
    local a, b = struct.unpack('<I4I4', redis.call('GETRANGE', key, at, at + 7))
    return redis.call('GETRANGE', key, a, b - 1)
  elseif v < id then lo = mid + 1 else hi = mid - 1 end
end
return false
"""

# KEYS: current, previous, meta of the new version; ARGV: version, channel. Atomic switch.
SWITCH_LUA = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('version ' .. ARGV[1] .. ' is incomplete (no meta key)')
end
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then redis.call('SET', KEYS[2], old) end
redis.call('PUBLISH', ARGV[2], 'version:' .. ARGV[1])
return old
"""

# KEYS: current, previous; ARGV: version-key prefix ("{p}:v:"), channel. Swaps the two pointers.
ROLLBACK_LUA = """
local cur = redis.call('GET', KEYS[1])
local prev = redis.call('GET', KEYS[2])
if not prev then return redis.error_reply('no previous version to roll back to') end
if redis.call('EXISTS', ARGV[1] .. prev .. ':meta') == 0 then
  return redis.error_reply('previous version ' .. prev .. ' is gone')
end
redis.call('SET', KEYS[1], prev)
if cur then redis.call('SET', KEYS[2], cur) else redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[2], 'rollback:' .. prev)
return prev
"""


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


@dataclass(frozen=True)
class ItemTable:
    """Item metadata sorted by id; ``lookup`` returns row positions (-1 when unknown)."""

    ids: np.ndarray
    category: np.ndarray
    price: np.ndarray
    available: np.ndarray

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
    }


def decode_items(fields: dict[bytes, bytes]) -> ItemTable:
    if not fields:
        return ItemTable(*(np.zeros(0, dt) for dt in ("<i8", "<i8", "<f4", "i1")))
    return ItemTable(
        ids=np.frombuffer(fields[b"ids"], "<i8"),
        category=np.frombuffer(fields[b"category"], "<i8"),
        price=np.frombuffer(fields[b"price"], "<f4"),
        available=np.frombuffer(fields[b"available"], "i1"),
    )


def _plain(obj):
    """JSON/msgpack-safe copy of metrics and params (numpy scalars, nan)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
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


# --- validation -----------------------------------------------------------------------------------
def validate_experiment(exp: dict | None, models: Iterable[str], where: str) -> dict | None:
    """Check an A/B experiment against the published model names; returns a clean copy."""
    if exp is None:
        return None
    names = set(models)
    missing = {"name", "control", "treatment", "treatment_share"} - set(exp)
    if missing:
        raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
    for arm in ("control", "treatment"):
        if exp[arm] not in names:
            raise ValueError(
                f"{where}.{arm}: model {exp[arm]!r} is not published ({sorted(names)})"
            )
    share = exp["treatment_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ValueError(f"{where}.treatment_share: must be a number in [0, 1], got {share!r}")
    if not isinstance(exp["name"], str) or not exp["name"]:
        raise ValueError(f"{where}.name: must be a non-empty string")
    return {
        "name": exp["name"],
        "control": exp["control"],
        "treatment": exp["treatment"],
        "treatment_share": float(share),
    }


def _check_lists(where: str, ids, items, scores) -> None:
    if ids is None or items is None or scores is None:
        raise ValueError(f"{where}: ids, items and scores must all be given")
    if items.ndim != 2 or items.shape != scores.shape or len(ids) != len(items):
        raise ValueError(
            f"{where}: want ids (n,), items and scores (n, N); got {ids.shape}, "
            f"{items.shape}, {scores.shape}"
        )
    if items.shape[1] > MAX_LIST_LENGTH:
        raise ValueError(f"{where}: lists longer than {MAX_LIST_LENGTH} are not supported")
    if items.size and items.min() < -1:
        row = int(np.flatnonzero((items < -1).any(axis=1))[0])
        raise ValueError(f"{where}: negative item id in row {row} (only -1 pads)")
    pad_gap = (items[:, :-1] < 0) & (items[:, 1:] >= 0)
    if pad_gap.any():
        row = int(np.flatnonzero(pad_gap.any(axis=1))[0])
        raise ValueError(f"{where}: row {row} (id {int(ids[row])}) has an item after -1 padding")
    if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
        raise ValueError(f"{where}: ids must be unique and non-negative")


def validate_bundle(bundle: ServingBundle) -> None:
    """Raise ValueError naming the model and field of the first contract violation."""
    if not bundle.models:
        raise ValueError("bundle.models: at least one model is needed")
    names = bundle.model_names
    if len(set(names)) != len(names):
        raise ValueError(f"bundle.models: duplicate model names {names}")
    for m in bundle.models:
        if not _NAME_RE.match(m.name):
            raise ValueError(f"model name {m.name!r}: use letters, digits, '_', '.', '-'")
        _check_lists(f"models[{m.name}].user_ids/items/scores", m.user_ids, m.items, m.scores)
        if m.similar_items is not None or m.similar_item_ids is not None:
            _check_lists(
                f"models[{m.name}].similar_item_ids/similar_items/similar_scores",
                m.similar_item_ids,
                m.similar_items,
                m.similar_scores,
            )
    if bundle.default_model not in names:
        raise ValueError(f"bundle.default_model: {bundle.default_model!r} not in {names}")
    validate_experiment(bundle.ab_experiment, names, "bundle.ab_experiment")
    n_hist = len(bundle.history_user_ids)
    if len(bundle.history_indptr) != n_hist + 1:
        raise ValueError("bundle.history_indptr: must have len(history_user_ids) + 1 entries")
    n_ev = int(bundle.history_indptr[-1]) if n_hist else 0
    for name in ("history_items", "history_events", "history_timestamps"):
        if len(getattr(bundle, name)) < n_ev:
            raise ValueError(f"bundle.{name}: shorter than history_indptr[-1] = {n_ev}")
    if n_hist and len(np.unique(bundle.history_user_ids)) != n_hist:
        raise ValueError("bundle.history_user_ids: must be unique")
    n_items = len(bundle.item_ids)
    for name in ("item_category", "item_price", "item_available"):
        if len(getattr(bundle, name)) != n_items:
            raise ValueError(f"bundle.{name}: length differs from item_ids ({n_items})")
    if len(np.unique(bundle.item_ids)) != n_items:
        raise ValueError("bundle.item_ids: must be unique")
    if len(bundle.popular_items) != len(bundle.popular_scores):
        raise ValueError("bundle.popular_items/popular_scores: lengths differ")
    for cat, (it, sc) in bundle.popular_by_category.items():
        if len(it) != len(sc):
            raise ValueError(f"bundle.popular_by_category[{cat}]: items and scores lengths differ")


# --- writer ---------------------------------------------------------------------------------------
ProgressHook = Callable[[int, int], None]


@dataclass
class PublishReport:
    """What one publish wrote and what it cost."""

    version: str
    previous: str | None
    seconds: float
    keys: int
    payload_bytes: int
    redis_bytes: int  # INFO used_memory after writing minus before (both old versions present)
    family_bytes: dict[str, int] = field(default_factory=dict)
    family_lists: dict[str, int] = field(default_factory=dict)
    deleted_versions: list[str] = field(default_factory=list)

    @property
    def bytes_per_user_list(self) -> float:
        """Average payload + bucket index bytes of one per-user top-N list."""
        b = sum(v for k, v in self.family_bytes.items() if k.startswith("rec:"))
        n = sum(v for k, v in self.family_lists.items() if k.startswith("rec:"))
        return b / n if n else 0.0


class _Writer:
    """Pipelines SETs in batches; calls the progress hook after each batch."""

    def __init__(self, redis, hook: ProgressHook | None, batch_bytes: int, batch_keys: int):
        self.redis = redis
        self.pipe = redis.pipeline(transaction=False)
        self.hook = hook
        self.batch_bytes, self.batch_keys = batch_bytes, batch_keys
        self.pending_bytes = self.pending_keys = 0
        self.keys = self.bytes = 0

    def set(self, key: str, value: bytes) -> None:
        self.pipe.set(key, value)
        self._count(len(value))

    def hset(self, key: str, mapping: dict[str, bytes]) -> None:
        if mapping:
            self.pipe.hset(key, mapping=mapping)
            self._count(sum(len(v) for v in mapping.values()))

    def _count(self, n: int) -> None:
        self.pending_bytes += n
        self.pending_keys += 1
        self.keys += 1
        self.bytes += n
        if self.pending_bytes >= self.batch_bytes or self.pending_keys >= self.batch_keys:
            self.flush()

    def flush(self) -> None:
        if self.pending_keys:
            self.pipe.execute()
            self.pending_bytes = self.pending_keys = 0
            if self.hook is not None:
                self.hook(self.keys, self.bytes)


def _write_family(
    w: _Writer,
    keys: Keys,
    version: str,
    family: str,
    ids: np.ndarray,
    blob_bytes: int,
    encode_rows: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    rows_per_group: int = 16_384,
) -> dict:
    """Write one family as bucket blobs of contiguous ids, each at most ``blob_bytes`` long.

    ``encode_rows(rows)`` encodes the given rows in that order. Blobs are filled close to
    ``blob_bytes`` (just under an allocator size class) because Redis rounds every string up to
    its size class: packing to the class loses ~1 % instead of ~10 % on random sizes.
    """
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    bounds: list[np.ndarray] = []
    written = 0
    n_buckets = 0
    for a in range(0, len(ids), rows_per_group):  # groups of rows bound the encoder's memory
        rows = order[a : a + rows_per_group]
        payload, offsets = encode_rows(rows)
        cost = np.diff(offsets) + 12  # payload + i64 id + u32 offset
        room = blob_bytes - 8 - int(cost.max())
        if room <= 0:
            raise ValueError(f"{family}: a list of {int(cost.max())} bytes exceeds the blob size")
        local = (np.cumsum(cost) - cost) // room
        starts = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
        stops = np.r_[starts[1:], len(rows)]
        for s0, s1 in zip(starts.tolist(), stops.tolist(), strict=True):  # ~100 ids per blob
            blob = bucket_blob(ids[rows[s0:s1]], payload, offsets[s0 : s1 + 1])
            w.set(keys.blob(version, family, n_buckets), blob)
            n_buckets += 1
            written += len(blob)
        bounds.append(ids[rows[starts]])
    first_ids = np.concatenate(bounds) if bounds else np.zeros(0, np.int64)
    w.set(keys.bounds(version, family), first_ids.astype("<i8").tobytes())
    written += 8 * len(first_ids)
    return {"buckets": int(n_buckets), "count": int(len(ids)), "bytes": int(written)}


def _write_lists(
    w: _Writer, keys: Keys, version: str, family: str, ids, items, scores, blob_bytes: int
) -> dict:
    items = np.asarray(items, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    vocab = Vocab.from_lists(items)
    w.set(keys.vocab(version, family), vocab.ids.astype("<i8").tobytes())
    info = _write_family(
        w,
        keys,
        version,
        family,
        ids,
        blob_bytes,
        lambda rows: encode_lists(vocab.encode(items[rows]), scores[rows]),
    )
    info.update(kind="list", width=int(items.shape[1]), vocab=int(len(vocab.ids)))
    info["bytes"] += 8 * len(vocab.ids)
    return info


def _write_history(w: _Writer, keys: Keys, version: str, b: ServingBundle, blob_bytes: int):
    indptr = np.asarray(b.history_indptr, dtype=np.int64)
    items = np.asarray(b.history_items, dtype=np.int64)
    ts = np.asarray(b.history_timestamps, dtype=np.int64)
    events = event_codes(b.history_events)
    lengths, starts = np.diff(indptr), indptr[:-1]
    info = _write_family(
        w,
        keys,
        version,
        HIST_FAMILY,
        b.history_user_ids,
        blob_bytes,
        lambda rows: encode_history(lengths[rows], starts[rows], items, events, ts),
    )
    info.update(kind="history")
    return info


def _scan_versions(redis, keys: Keys) -> dict[str, list[bytes]]:
    """Every key under ``{p}:v:*`` grouped by version (finds partial versions too)."""
    found: dict[str, list[bytes]] = {}
    head = len(keys.prefix) + 3
    for key in redis.scan_iter(match=f"{keys.prefix}:v:*", count=2000):
        key = key.encode() if isinstance(key, str) else key
        version = key[head:].split(b":", 1)[0].decode()
        found.setdefault(version, []).append(key)
    return found


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def delete_prefix(redis, prefix: str) -> int:
    """Delete every key under ``{prefix}:`` (a test's own namespace); returns how many."""
    names = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
    for a in range(0, len(names), 1000):
        redis.unlink(*names[a : a + 1000])
    return len(names)


def delete_stale_versions(redis, prefix: str = "recsys", keep: Iterable[str] = ()) -> list[str]:
    """Delete every version except current, previous and ``keep``; returns the deleted ones."""
    keys = Keys(prefix)
    current, previous = (v.decode() if v else None for v in redis.mget(keys.current, keys.previous))
    protect = {current, previous, *keep}
    deleted = []
    for version, names in _scan_versions(redis, keys).items():
        if version in protect:
            continue
        for a in range(0, len(names), 1000):
            redis.unlink(*names[a : a + 1000])
        redis.hdel(keys.control, control_default_field(version))
        deleted.append(version)
    return sorted(deleted, key=_version_key)


def publish_bundle(
    redis,
    bundle: ServingBundle,
    prefix: str = "recsys",
    *,
    blob_bytes: int = DEFAULT_BLOB_BYTES,
    on_progress: ProgressHook | None = None,
    batch_bytes: int = 8 << 20,
    batch_keys: int = 1000,
) -> PublishReport:
    """Write ``bundle`` as a new version, switch ``{p}:current`` to it atomically, announce it.

    ``redis`` is a synchronous ``redis.Redis`` (bytes responses). Versions other than the new
    current and the previous one are deleted, including partial ones left by a failed publish.
    ``on_progress(keys_written, bytes_written)`` runs after each pipelined batch.
    """
    if redis.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("publish_bundle: the Redis client must use decode_responses=False")
    validate_bundle(bundle)
    t0 = time.perf_counter()
    keys = Keys(prefix)
    stale = delete_stale_versions(redis, prefix)  # partial keys of a publish that died half-way
    mem0 = int(redis.info("memory")["used_memory"])
    version = str(redis.incr(keys.seq))
    w = _Writer(redis, on_progress, batch_bytes, batch_keys)
    families: dict[str, dict] = {}
    models_meta = []
    for m in bundle.models:
        fam = rec_family(m.name)
        families[fam] = _write_lists(
            w, keys, version, fam, m.user_ids, m.items, m.scores, blob_bytes
        )
        has_similar = m.similar_items is not None
        if has_similar:
            sfam = sim_family(m.name)
            families[sfam] = _write_lists(
                w,
                keys,
                version,
                sfam,
                m.similar_item_ids,
                m.similar_items,
                m.similar_scores,
                blob_bytes,
            )
        models_meta.append(_model_meta(m, has_similar))
    families[HIST_FAMILY] = _write_history(w, keys, version, bundle, blob_bytes)
    popular = {"all": encode_pairs(bundle.popular_items, bundle.popular_scores)}
    for cat, (it, sc) in bundle.popular_by_category.items():
        popular[str(int(cat))] = encode_pairs(it, sc)
    w.hset(keys.popular(version), popular)
    w.hset(keys.items(version), encode_items(bundle))
    w.flush()
    meta = {
        "format": FORMAT_VERSION,
        "version": version,
        "created_at": bundle.created_at,
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "default_model": bundle.default_model,
        "ab_experiment": validate_experiment(
            bundle.ab_experiment, bundle.model_names, "bundle.ab_experiment"
        ),
        "models": models_meta,
        "families": families,
        "n_items": int(len(bundle.item_ids)),
        "popular_categories": sorted(int(c) for c in bundle.popular_by_category),
    }
    w.set(keys.meta(version), encode_meta(meta))  # last: marks the version complete
    w.flush()
    mem1 = int(redis.info("memory")["used_memory"])
    switch = redis.register_script(SWITCH_LUA)
    old = switch(
        keys=[keys.current, keys.previous, keys.meta(version)], args=[version, keys.channel]
    )
    deleted = sorted(set(stale) | set(delete_stale_versions(redis, prefix)), key=_version_key)
    return PublishReport(
        version=version,
        previous=old.decode() if old else None,
        seconds=time.perf_counter() - t0,
        keys=w.keys,
        payload_bytes=w.bytes,
        redis_bytes=mem1 - mem0,
        family_bytes={k: v["bytes"] for k, v in families.items()},
        family_lists={k: v["count"] for k, v in families.items()},
        deleted_versions=deleted,
    )


def _model_meta(m: ModelLists, has_similar: bool) -> dict:
    return {
        "name": m.name,
        "version": str(m.version),
        "trained_at": str(m.trained_at),
        "metrics": _plain(dict(m.metrics)),
        "params": _plain(dict(m.params)),
        "n_users": int(len(m.user_ids)),
        "list_length": int(m.items.shape[1]),
        "has_similar": has_similar,
    }


# --- sync helpers (publisher side, admin scripts, consistency checks) -----------------------------
def _text(v) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def current_version(redis, prefix: str = "recsys") -> str | None:
    """The version being served, or None when nothing was published."""
    return _text(redis.get(Keys(prefix).current))


def rollback(redis, prefix: str = "recsys") -> str:
    """Serve the previous version again (the current one becomes previous); returns it."""
    keys = Keys(prefix)
    script = redis.register_script(ROLLBACK_LUA)
    return _text(script(keys=[keys.current, keys.previous], args=[f"{prefix}:v:", keys.channel]))


def read_meta(redis, prefix: str = "recsys", version: str | None = None) -> dict | None:
    keys = Keys(prefix)
    version = version or current_version(redis, prefix)
    raw = redis.get(keys.meta(version)) if version else None
    return decode_meta(raw) if raw else None


def read_user_list(
    redis, model: str, user_id: int, prefix: str = "recsys", version: str | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """A user's published top-N (items, scores) for ``model``, or None (sync; for checks)."""
    keys = Keys(prefix)
    meta = read_meta(redis, prefix, version)
    fam = rec_family(model)
    if meta is None or fam not in meta["families"]:
        return None
    v = meta["version"]
    bucket = bucket_of(np.frombuffer(redis.get(keys.bounds(v, fam)), "<i8"), user_id)
    if bucket < 0:
        return None
    lookup = redis.register_script(LOOKUP_LUA)
    raw = lookup(keys=[keys.blob(v, fam, bucket)], args=[int(user_id)])
    if not raw:
        return None
    return decode_list(raw, np.frombuffer(redis.get(keys.vocab(v, fam)), "<i8"))


# --- async reader (the service) -------------------------------------------------------------------
@dataclass(frozen=True)
class LayoutState:
    """Pointers and admin overrides, read in one round trip."""

    current: str | None
    previous: str | None
    control: dict[str, str]

    def default_override(self) -> str | None:
        return self.control.get(control_default_field(self.current)) if self.current else None

    def ab_override(self) -> dict | None:
        raw = self.control.get(CONTROL_AB)
        return json.loads(raw) if raw else None


class LayoutReader:
    """Reads published versions with a ``redis.asyncio.Redis`` client (bytes responses)."""

    def __init__(self, redis, prefix: str = "recsys"):
        self.redis = redis
        self.keys = Keys(prefix)
        self._lookup = redis.register_script(LOOKUP_LUA)

    async def state(self) -> LayoutState:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.current)
            pipe.get(self.keys.previous)
            pipe.hgetall(self.keys.control)
            cur, prev, control = await pipe.execute()
        return LayoutState(
            _text(cur), _text(prev), {_text(k): _text(v) for k, v in (control or {}).items()}
        )

    async def meta(self, version: str) -> dict | None:
        raw = await self.redis.get(self.keys.meta(version))
        return decode_meta(raw) if raw else None

    async def vocab(self, version: str, family: str) -> np.ndarray:
        raw = await self.redis.get(self.keys.vocab(version, family))
        return np.frombuffer(raw or b"", "<i8")

    async def bounds(self, version: str, family: str) -> np.ndarray:
        raw = await self.redis.get(self.keys.bounds(version, family))
        return np.frombuffer(raw or b"", "<i8")

    async def lookup(self, version: str, family: str, bucket: int, ident: int) -> bytes | None:
        """The payload of ``ident`` in bucket ``bucket`` (from :func:`bucket_of`), or None."""
        if bucket < 0:
            return None
        key = self.keys.blob(version, family, bucket)
        return await self._lookup(keys=[key], args=[ident]) or None

    async def lookup_many(
        self, version: str, family: str, wanted: list[tuple[int, int]]
    ) -> list[bytes | None]:
        """Payloads of several (bucket, id) pairs in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, ident in wanted:
                await self._lookup(
                    keys=[self.keys.blob(version, family, max(bucket, 0))],
                    args=[ident],
                    client=pipe,
                )
            found = await pipe.execute()
        return [r if r and b >= 0 else None for r, (b, _) in zip(found, wanted, strict=True)]

    async def popular(self, version: str, category: int | None) -> bytes | None:
        return await self.redis.hget(
            self.keys.popular(version), "all" if category is None else str(category)
        )

    async def items(self, version: str) -> ItemTable:
        return decode_items(await self.redis.hgetall(self.keys.items(version)))

    async def set_default_model(self, version: str, model: str) -> None:
        await self.redis.hset(self.keys.control, control_default_field(version), model)
        await self.redis.publish(self.keys.channel, "control")

    async def set_ab_experiment(self, exp: dict | None) -> None:
        if exp is None:
            await self.redis.hdel(self.keys.control, CONTROL_AB)
        else:
            await self.redis.hset(self.keys.control, CONTROL_AB, json.dumps(exp))
        await self.redis.publish(self.keys.channel, "control")

    async def announce(self, message: str) -> None:
        await self.redis.publish(self.keys.channel, message)

    async def append_feedback(self, fields: dict[str, str], maxlen: int) -> str:
        entry = await self.redis.xadd(self.keys.feedback, fields, maxlen=maxlen, approximate=True)
        return _text(entry)
