"""The publisher: a bundle written as a new version, switched to atomically; cleanup; rollback.

Runs in the Dagster asset ``serving_bundle`` with a synchronous client: ``redis.Redis``, or
``redis.cluster.RedisCluster`` (see :mod:`.clients`). Everything here works on both: the batches
are non-transactional pipelines (a cluster client sends each node its share), the bulk keys are
spread over the slots, and the scripts touch only deployment-slot keys (see :mod:`.keys`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from recsys_serving.bundle import ModelLists, ServingBundle
from recsys_serving.redis_layout.clients import decodes_responses, unlink_keys, used_memory
from recsys_serving.redis_layout.codec import (
    Vocab,
    bucket_blob,
    encode_history,
    encode_items,
    encode_lists,
    encode_meta,
    encode_pairs,
    event_codes,
    jsonable,
)
from recsys_serving.redis_layout.keys import (
    HIST_FAMILY,
    Keys,
    control_default_field,
    rec_family,
    sim_family,
)
from recsys_serving.redis_layout.scripts import ROLLBACK_LUA, SWITCH_LUA
from recsys_serving.redis_layout.validation import validate_bundle, validate_experiment
from recsys_serving.redis_layout.weights import CHUNK_BYTES, encode_weights, weights_nbytes

FORMAT_VERSION = 1
DEFAULT_BLOB_BYTES = 28_600  # jemalloc class 28 KiB minus the sds header; < 32 KiB


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
    weight_bytes: dict[str, int] = field(default_factory=dict)  # model -> bytes of its network

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


def _write_weights(w: _Writer, keys: Keys, version: str, m: ModelLists, chunk_bytes: int) -> dict:
    """The session network's arrays as chunked strings; returns their spec for the meta."""
    spec, chunks = encode_weights(m.gru, chunk_bytes)
    for name, c, raw in chunks:
        w.set(keys.weights(version, m.name, name, c), raw)
    return spec


def _scan_versions(redis, keys: Keys) -> dict[str, list[bytes]]:
    """Every key of every version grouped by version (finds partial versions too).

    On a cluster ``scan_iter`` walks every master.
    """
    found: dict[str, list[bytes]] = {}
    for pattern in keys.version_patterns:
        for key in redis.scan_iter(match=pattern, count=2000):
            key = key.encode() if isinstance(key, str) else key
            found.setdefault(keys.version_of(key), []).append(key)
    return found


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def delete_prefix(redis, prefix: str) -> int:
    """Delete every key of deployment ``prefix`` (a test's own namespace); returns how many."""
    names = [n for p in Keys(prefix).all_patterns for n in redis.scan_iter(match=p, count=1000)]
    return unlink_keys(redis, names)


def delete_stale_versions(redis, prefix: str = "recsys", keep: Iterable[str] = ()) -> list[str]:
    """Delete every version except current, previous and ``keep``; returns the deleted ones."""
    keys = Keys(prefix)
    current, previous = (v.decode() if v else None for v in redis.mget(keys.current, keys.previous))
    protect = {current, previous, *keep}
    deleted = []
    for version, names in _scan_versions(redis, keys).items():
        if version in protect:
            continue
        unlink_keys(redis, names)
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
    weight_chunk_bytes: int = CHUNK_BYTES,
) -> PublishReport:
    """Write ``bundle`` as a new version, switch ``{p}:current`` to it atomically, announce it.

    ``redis`` is a synchronous ``redis.Redis`` or ``RedisCluster`` (bytes responses). Versions
    other than the new current and the previous one are deleted, including partial ones left by
    a failed publish.
    ``on_progress(keys_written, bytes_written)`` runs after each pipelined batch. A model's
    session network (``ModelLists.gru``) is written in strings of ``weight_chunk_bytes``.
    """
    if decodes_responses(redis):
        raise ValueError("publish_bundle: the Redis client must use decode_responses=False")
    validate_bundle(bundle)
    t0 = time.perf_counter()
    keys = Keys(prefix)
    stale = delete_stale_versions(redis, prefix)  # partial keys of a publish that died half-way
    mem0 = used_memory(redis)
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
        meta_m = _model_meta(m, has_similar)
        if m.gru is not None:
            meta_m["gru"] = _write_weights(w, keys, version, m, weight_chunk_bytes)
        models_meta.append(meta_m)
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
    mem1 = used_memory(redis)
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
        weight_bytes={m["name"]: weights_nbytes(m["gru"]) for m in models_meta if "gru" in m},
    )


def _model_meta(m: ModelLists, has_similar: bool) -> dict:
    return {
        "name": m.name,
        "version": str(m.version),
        "trained_at": str(m.trained_at),
        "metrics": jsonable(dict(m.metrics)),
        "params": jsonable(dict(m.params)),
        "n_users": int(len(m.user_ids)),
        "list_length": int(m.items.shape[1]),
        "has_similar": has_similar,
    }


# --- admin: pointers ------------------------------------------------------------------------------
def _text(v) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def rollback(redis, prefix: str = "recsys") -> str:
    """Serve the previous version again (the current one becomes previous); returns it."""
    keys = Keys(prefix)
    script = redis.register_script(ROLLBACK_LUA)
    return _text(script(keys=[keys.current, keys.previous], args=[keys.meta_prefix, keys.channel]))
