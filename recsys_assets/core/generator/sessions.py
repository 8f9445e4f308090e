"""Synthetic browsing: visitors, sessions, timestamps and the items they view.

Part of the synthetic generator (see :mod:`recsys_assets.core.generator`). Planted here:

* **taste** — each visitor has a Dirichlet mix over a few root categories and a latent factor
  vector; a *fresh* view picks a root from the mix, then an item by sampling-importance
  resampling: candidates drawn by popularity, one kept with probability ∝ exp(β · user·item);
* **transitions** — after the first view a session either follows the planted chain
  (``next_items``), repeats the item it is on, or makes a fresh pick;
* **rhythm** — session starts follow a day-of-week and hour-of-day profile (UTC).

Arrays are built whole; the only Python loop walks *positions within a session* (at most
``MAX_SESSION_LENGTH`` steps, each one vectorised over every session still that long).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from recsys_assets.core.generator.catalog import BlockSampler, CategoryForest, ItemCatalog

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
SEC_MS = 1_000
SESSION_GAP_MS = 30 * MIN_MS  # the cleaning step's session cut; gaps inside stay below it
MAX_SESSION_LENGTH = 150  # keeps ordinary shoppers under any bot rule (1,000 events, 200/h)
MAX_SESSIONS_PER_VISITOR = 40

STEP_FRESH, STEP_CHAIN, STEP_REPEAT = 0, 1, 2

# Hour-of-day profile in UTC: quiet early morning, an evening peak (the shop's customers are
# mostly in the Americas), a smaller midday shoulder.
_HOURS = np.arange(24)
HOUR_PROFILE = (
    0.25
    + np.exp(-((((_HOURS - 20 + 12) % 24 - 12) / 3.2) ** 2))
    + 0.35 * np.exp(-((((_HOURS - 14 + 12) % 24 - 12) / 2.5) ** 2))
)
# Monday … Sunday: busiest early in the week, Saturday quietest.
WEEKDAY_PROFILE = np.array([1.08, 1.07, 1.02, 0.98, 0.90, 0.80, 0.92])


@dataclass(frozen=True)
class Period:
    start_ms: int  # first instant, inclusive
    end_ms: int  # exclusive

    @classmethod
    def from_dates(cls, start: str, end: str) -> Period:
        """``start`` … ``end`` (ISO dates, UTC), both days included."""
        try:
            lo = datetime.fromisoformat(start).replace(tzinfo=UTC)
            hi = datetime.fromisoformat(end).replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"start/end: expected ISO dates like 2015-05-03 ({exc})") from None
        if hi < lo:
            raise ValueError(f"end: {end} is before start {start}")
        return cls(int(lo.timestamp() * 1000), int(hi.timestamp() * 1000) + DAY_MS)

    @property
    def n_days(self) -> int:
        return (self.end_ms - self.start_ms) // DAY_MS


@dataclass(frozen=True)
class Behaviour:
    """Knobs of the browsing model (a subset of ``GeneratorConfig``)."""

    p_chain: float
    p_repeat: float
    next_slot_probs: tuple[float, ...]
    taste_strength: float
    taste_candidates: int
    explore: float  # share of fresh picks that ignore the visitor's root mix


@dataclass
class Views:
    """Sessions and their view events. Sessions are ordered by length, longest first."""

    session_visitor: np.ndarray  # (S,)
    session_length: np.ndarray  # (S,)
    session_is_bot: np.ndarray  # (S,) bool
    session: np.ndarray  # (E,) session of each view; views of a session are contiguous
    item: np.ndarray  # (E,) item index
    ts: np.ndarray  # (E,) Unix ms
    step: np.ndarray  # (E,) int8: STEP_FRESH / STEP_CHAIN / STEP_REPEAT (bots: fresh)


def _rhythm_cdf(rng: np.random.Generator, period: Period) -> np.ndarray:
    days = np.arange(period.n_days)
    weekday = (period.start_ms // DAY_MS + days + 3) % 7  # 1970-01-01 was a Thursday
    day_w = WEEKDAY_PROFILE[weekday] * rng.lognormal(0.0, 0.06, period.n_days)
    # A slow drift over the period so that daily counts are not flat apart from the weekday.
    day_w *= 1.0 + 0.12 * np.sin(2 * np.pi * days / max(period.n_days, 1) * 1.5 + 0.7)
    w = (day_w[:, None] * HOUR_PROFILE[None, :]).ravel()
    return np.cumsum(w) / w.sum()


def draw_times(rng: np.random.Generator, cdf: np.ndarray, period: Period, n: int) -> np.ndarray:
    """``n`` instants (ms) following the day × hour profile whose cumulative form is ``cdf``."""
    hour_bin = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)
    return period.start_ms + hour_bin * HOUR_MS + rng.integers(0, HOUR_MS, n)


def truncated_zeta_cdf(exponent: float, max_value: int) -> np.ndarray:
    k = np.arange(1, max_value + 1, dtype=np.float64)
    p = k**-exponent
    return np.cumsum(p) / p.sum()


def _zeta_exponent_for_mean(mean: float, max_value: int) -> float:
    """The exponent whose zeta law truncated at ``max_value`` has the given mean (bisection)."""
    k = np.arange(1, max_value + 1, dtype=np.float64)
    lo, hi = 1.05, 12.0
    for _ in range(60):
        mid = (lo + hi) / 2
        p = k**-mid
        if (k * p).sum() / p.sum() > mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def draw_counts(rng: np.random.Generator, n: int, total: int, max_value: int) -> np.ndarray:
    """``n`` heavy-tailed counts ≥ 1 summing to exactly ``total`` (most are 1 or 2)."""
    if total < n:
        raise ValueError(f"cannot spread {total} events over {n} sessions (need one each)")
    cdf = truncated_zeta_cdf(
        _zeta_exponent_for_mean(max(total / n, 1.0 + 1e-9), max_value), max_value
    )
    counts = np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64) + 1
    counts = np.minimum(counts, max_value)
    diff = total - int(counts.sum())
    if diff > 0:
        # Lengthen sessions in proportion to their length: the tail stays heavy.
        room = (max_value - counts).astype(np.float64) * counts
        add = np.bincount(rng.choice(n, size=diff, p=room / room.sum()), minlength=n)
        counts += np.minimum(add, max_value - counts)
        short = total - int(counts.sum())
        if short:  # only when a few sessions hit the cap; top up the shortest
            counts[np.argsort(counts, kind="stable")[:short]] += 1
    elif diff < 0:
        removable = np.repeat(np.arange(n), counts - 1)
        drop = rng.choice(len(removable), size=-diff, replace=False)
        counts -= np.bincount(removable[drop], minlength=n)
    return counts


def schedule_sessions(
    visitor: np.ndarray, raw_start: np.ndarray, duration: np.ndarray, period: Period
) -> np.ndarray:
    """Session starts moved later where needed so that one visitor's sessions never overlap and
    are at least ``SESSION_GAP_MS`` apart; visitors stay independent.

    With ``P`` the within-visitor running sum of the previous sessions' (duration + gap),
    ``start' = P + cummax(raw − P)`` per visitor; an offset per visitor turns the segmented
    cummax into one global ``np.maximum.accumulate``.
    """
    order = np.lexsort((raw_start, visitor))
    v = visitor[order]
    s = raw_start[order] - period.start_ms
    d = duration[order] + SESSION_GAP_MS + SEC_MS
    new_visitor = np.r_[True, v[1:] != v[:-1]]
    seg = np.cumsum(new_visitor) - 1
    seg_first = np.flatnonzero(new_visitor)
    excl = np.cumsum(d) - d
    p = excl - excl[seg_first][seg]
    a = s - p
    big = int(s.max() + p.max() + 1) if len(s) else 1
    shifted = np.maximum.accumulate(a + seg * big) - seg * big
    out = np.empty_like(raw_start)
    out[order] = shifted + p + period.start_ms
    return out


def segment_cumsum(values: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment (segments are contiguous, in order)."""
    c = np.cumsum(values)
    base = np.repeat(c[offsets] - values[offsets], lengths)
    return c - base


def _taste_roots(
    rng: np.random.Generator,
    visitor: np.ndarray,
    pref_root: np.ndarray,
    pref_cum: np.ndarray,
    root_cdf: np.ndarray,
    explore: float,
) -> np.ndarray:
    n = len(visitor)
    slot = (rng.random(n)[:, None] > pref_cum[visitor]).sum(axis=1)
    slot = np.minimum(slot, pref_root.shape[1] - 1)
    roots = pref_root[visitor, slot]
    wander = rng.random(n) < explore
    picked = np.searchsorted(root_cdf, rng.random(int(wander.sum())), side="right")
    roots[wander] = np.minimum(picked, len(root_cdf) - 1)
    return roots


def _fresh_picks(
    rng: np.random.Generator,
    roots: np.ndarray,
    visitor_factors: np.ndarray,
    items: ItemCatalog,
    by_root: BlockSampler,
    behaviour: Behaviour,
    chunk: int = 1 << 17,
) -> np.ndarray:
    """Sampling-importance resampling of one item per row: popularity proposes, taste decides."""
    out = np.empty(len(roots), dtype=np.int64)
    k = behaviour.taste_candidates
    for lo in range(0, len(roots), chunk):
        r = roots[lo : lo + chunk]
        cand = by_root.draw(r[:, None], rng.random((len(r), k)))
        score = np.einsum("nd,nkd->nk", visitor_factors[lo : lo + chunk], items.factors[cand])
        score = behaviour.taste_strength * score + rng.gumbel(size=score.shape)
        out[lo : lo + chunk] = cand[np.arange(len(r)), score.argmax(axis=1)]
    return out


def generate_views(
    rng: np.random.Generator,
    *,
    period: Period,
    forest: CategoryForest,
    items: ItemCatalog,
    next_items: np.ndarray,
    n_visitors: int,
    n_views: int,
    n_factors: int,
    behaviour: Behaviour,
    bot_events: np.ndarray,
) -> Views:
    """Browsing of ``n_visitors`` ordinary visitors (exactly ``n_views`` views) plus one bot per
    entry of ``bot_events`` (that many views each). Bots are visitors ``n_visitors …``."""
    cdf = _rhythm_cdf(rng, period)

    # --- ordinary visitors: how many sessions, how long -------------------------------------
    sess_cdf = truncated_zeta_cdf(3.2, MAX_SESSIONS_PER_VISITOR)
    n_sess = np.searchsorted(sess_cdf, rng.random(n_visitors), side="right") + 1
    n_sess = np.minimum(n_sess, MAX_SESSIONS_PER_VISITOR)
    if n_sess.sum() > n_views:  # tiny configurations: one session each
        n_sess[:] = 1
    sess_visitor = np.repeat(np.arange(n_visitors), n_sess)
    length = draw_counts(rng, len(sess_visitor), n_views, MAX_SESSION_LENGTH)

    # --- bots: long crawling sessions of a few seconds per page ------------------------------
    bot_visitor, bot_length = [], []
    for b, total in enumerate(bot_events):
        parts = rng.integers(80, 500, size=int(total) // 80 + 1)
        before = np.cumsum(parts) - parts
        parts = np.minimum(parts[before < total], total - before[before < total])
        bot_visitor.append(np.full(len(parts), n_visitors + b))
        bot_length.append(parts)
    if bot_length:
        sess_visitor = np.concatenate([sess_visitor, *bot_visitor])
        length = np.concatenate([length, *bot_length])
    is_bot = sess_visitor >= n_visitors

    # Longest first: at step t the sessions still running are a prefix.
    order = np.argsort(-length, kind="stable")
    sess_visitor, length, is_bot = sess_visitor[order], length[order], is_bot[order]
    n_s, n_e = len(length), int(length.sum())
    offsets = np.cumsum(length) - length
    session = np.repeat(np.arange(n_s), length)
    pos = np.arange(n_e) - offsets[session]
    ev_bot = is_bot[session]

    # --- what kind of step each view is ----------------------------------------------------
    u = rng.random(n_e)
    step = np.where(
        u < behaviour.p_chain,
        STEP_CHAIN,
        np.where(u < behaviour.p_chain + behaviour.p_repeat, STEP_REPEAT, STEP_FRESH),
    ).astype(np.int8)
    step[(pos == 0) | ev_bot] = STEP_FRESH
    slot_cdf = np.cumsum(behaviour.next_slot_probs) / np.sum(behaviour.next_slot_probs)
    slot = np.minimum(np.searchsorted(slot_cdf, rng.random(n_e), side="right"), len(slot_cdf) - 1)

    # --- taste: root mix (Dirichlet over 1–3 roots) and latent factors ----------------------
    by_root = BlockSampler.build(items.root, items.weight, forest.n)
    root_mass = by_root.total[: forest.n_roots]
    root_cdf = np.cumsum(root_mass) / root_mass.sum()
    pref_p = root_mass**0.8 / (root_mass**0.8).sum()
    pref_root = rng.choice(forest.n_roots, size=(n_visitors, 3), p=pref_p)
    mix = rng.gamma(1.0, size=(n_visitors, 3))
    mix[np.arange(3)[None, :] >= 1 + rng.binomial(2, 0.4, n_visitors)[:, None]] = 0.0
    pref_cum = np.cumsum(mix, axis=1) / mix.sum(axis=1, keepdims=True)
    visitor_factors = rng.normal(0.0, 1.0, (n_visitors, n_factors)).astype(np.float32)

    item = np.full(n_e, -1, dtype=np.int64)
    fresh = np.flatnonzero((step == STEP_FRESH) & ~ev_bot)
    fv = sess_visitor[session[fresh]]
    roots = _taste_roots(rng, fv, pref_root, pref_cum, root_cdf, behaviour.explore)
    item[fresh] = _fresh_picks(rng, roots, visitor_factors[fv], items, by_root, behaviour)
    bot_ev = np.flatnonzero(ev_bot)
    item[bot_ev] = by_root.order[rng.integers(0, len(by_root.order), len(bot_ev))]

    # --- walk the chain, one position at a time across all sessions -------------------------
    running = np.searchsorted(-length, -np.arange(int(length.max()) + 1), side="left")
    for t in range(1, len(running)):
        idx = offsets[: running[t]] + t
        prev = item[idx - 1]
        st = step[idx]
        walked = np.where(st == STEP_CHAIN, next_items[prev, slot[idx]], prev)
        item[idx] = np.where(st == STEP_FRESH, item[idx], walked)

    # --- time: gaps inside sessions, then session starts ------------------------------------
    gap = np.clip(rng.lognormal(np.log(40 * SEC_MS), 1.0, n_e), 2 * SEC_MS, 25 * MIN_MS)
    gap = np.where(ev_bot, rng.integers(1 * SEC_MS, 6 * SEC_MS, n_e), gap).astype(np.int64)
    gap[offsets] = 0
    within = segment_cumsum(gap, offsets, length)
    duration = within[offsets + length - 1]
    raw_start = draw_times(rng, cdf, period, n_s)
    bot_s = np.flatnonzero(is_bot)
    raw_start[bot_s] = period.start_ms + rng.integers(
        0, period.end_ms - period.start_ms, len(bot_s)
    )
    start = schedule_sessions(sess_visitor, raw_start, duration, period)
    ts = start[session] + within
    return Views(
        session_visitor=sess_visitor,
        session_length=length,
        session_is_bot=is_bot,
        session=session,
        item=item,
        ts=ts,
        step=step,
    )
