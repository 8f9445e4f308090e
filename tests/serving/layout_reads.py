"""Synchronous reads of a published version, for tests only (the service reads asynchronously).

They check what :func:`recsys_serving.redis_layout.publish_bundle` wrote through the same key
names, Lua lookup and decoders that the service uses.
"""

from __future__ import annotations

import numpy as np

from recsys_serving.redis_layout import (
    LOOKUP_LUA,
    Keys,
    bucket_of,
    decode_list,
    decode_meta,
    rec_family,
)


def current_version(redis, prefix: str) -> str | None:
    """The version being served, or None when nothing was published."""
    raw = redis.get(Keys(prefix).current)
    return raw.decode() if raw else None


def read_meta(redis, prefix: str, version: str | None = None) -> dict | None:
    version = version or current_version(redis, prefix)
    raw = redis.get(Keys(prefix).meta(version)) if version else None
    return decode_meta(raw) if raw else None


def read_user_list(
    redis, model: str, user_id: int, prefix: str, version: str | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """A user's published top-N (items, scores) for ``model``, or None."""
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
