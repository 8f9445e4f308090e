"""Users to experiment arms by a stable seeded hash (no state, same answer on every machine).

``splitmix64`` (Steele, Lea & Flood 2014; the seeding generator of xoshiro) mixes the 64 bits
of ``user_id`` XOR a salt into a well-spread 64-bit value; the top 53 bits as a fraction in
[0, 1) are compared with the treatment share. The same user, seed and salt always land in the
same arm, and different salts (one per experiment) give independent-looking assignments, as
an online A/B platform does.
"""

from __future__ import annotations

import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_53 = float(1 << 53)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of each 64-bit value (uint64 in, uint64 out)."""
    z = np.asarray(values).astype(np.uint64, copy=True)
    # uint64 arithmetic wraps modulo 2^64, which is what the mixer relies on.
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return z


def experiment_salt(seed: int, name: str = "") -> int:
    """A 64-bit salt from the seed and an experiment name (stable across processes: crc32,
    not Python's randomised ``hash``)."""
    mixed = splitmix64(np.array([(int(seed) << 32) ^ zlib.crc32(name.encode())], np.uint64))
    return int(mixed[0])


def unit_interval(user_ids: np.ndarray, seed: int, name: str = "") -> np.ndarray:
    """Each user's hash as a float in [0, 1)."""
    ids = np.asarray(user_ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"user_ids must be integers, got dtype {ids.dtype}")
    salt = np.uint64(experiment_salt(seed, name))
    hashed = splitmix64(ids.astype(np.int64).view(np.uint64) ^ salt)
    return (hashed >> np.uint64(11)).astype(np.float64) / _TWO_POW_53


def assign_arms(
    user_ids: np.ndarray, seed: int, treatment_share: float = 0.5, name: str = ""
) -> np.ndarray:
    """Boolean per user: True = treatment arm. Stable for a given (user, seed, name)."""
    if not 0.0 < treatment_share < 1.0:
        raise ValueError(f"treatment_share must be in (0, 1), got {treatment_share}")
    return unit_interval(user_ids, seed, name) < treatment_share
