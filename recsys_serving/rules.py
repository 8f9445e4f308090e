"""Business rules over candidate lists: what may be shown, per request, in numpy.

Per version, :class:`CatalogRules` holds small arrays aligned with the version's
:class:`~recsys_serving.redis_layout.ItemTable` (built once, when the version's item table is
first read): availability as a boolean array, prices, and each item's category with its
ancestors (a row of a ``categories x depth`` matrix). Per deployment, :class:`Overrides` holds
the shop's live states (unavailable / available / hidden) set between publishes; they apply at
answer time, so cached raw lists of every model stay valid.

A request's :class:`~recsys_serving.schemas.Rules` are checked against the catalogue and
compiled once into a :class:`RuleSet`, whose :meth:`RuleSet.filter` turns a candidate list into
one boolean mask (a few vectorised operations over the candidates, no loop over items) and
counts what each rule removed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from recsys_serving.bundle import EVENT_CODES
from recsys_serving.redis_layout import ItemTable
from recsys_serving.redis_layout.reader import OVERRIDES_GENERATION
from recsys_serving.schemas import Rules

UNAVAILABLE, AVAILABLE, HIDDEN = 0, 1, 2
OVERRIDE_STATES = ("unavailable", "available", "hidden")  # code = index
GENERATION_FIELD = OVERRIDES_GENERATION  # in the overrides hash; item ids are digits
MAX_TREE_DEPTH = 64  # a parent chain longer than this is a cycle in the tree
# Order in which removals are counted: an item failing several rules counts under the first.
RULE_ORDER = (
    "hidden", "unavailable", "exclude_items", "exclude_seen", "category_id",
    "categories", "exclude_categories", "price",
)  # fmt: skip
DEFAULT_RULES = Rules()
_EMPTY = np.zeros(0, np.int64)


class RuleError(ValueError):
    """A rule the served version cannot apply; ``field`` names it (``rules.price_min``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def member(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` in ``sorted_set`` (binary search: cheaper than np.isin on short inputs)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_set, values)
    np.minimum(at, len(sorted_set) - 1, out=at)
    return sorted_set[at] == values


def new_generation() -> str:
    return uuid.uuid4().hex


# --- live overrides -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overrides:
    """The shop's live item states: ids sorted, one state code each."""

    generation: str | None = None
    ids: np.ndarray = field(default_factory=lambda: _EMPTY)
    state: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    @classmethod
    def from_hash(cls, fields: dict) -> Overrides:
        """From the Redis hash (bytes or str keys): item id -> state name, plus the generation."""
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        generation = text.pop(GENERATION_FIELD, None)
        pairs = [(int(k), OVERRIDE_STATES.index(v)) for k, v in text.items()
                 if k.isdigit() and v in OVERRIDE_STATES]  # fmt: skip
        if not pairs:
            return cls(generation)
        arr = np.asarray(pairs, dtype=np.int64)
        order = np.argsort(arr[:, 0], kind="stable")
        return cls(generation, arr[order, 0], arr[order, 1].astype(np.int8))

    def lookup(self, items: np.ndarray) -> np.ndarray:
        """State code per item, -1 where the item has no override."""
        if not len(self.ids):
            return np.full(len(items), -1, np.int8)
        at = np.minimum(np.searchsorted(self.ids, items), len(self.ids) - 1)
        return np.where(self.ids[at] == items, self.state[at], -1).astype(np.int8)

    def as_dict(self) -> dict[str, str]:
        pairs = zip(self.ids.tolist(), self.state.tolist(), strict=True)
        return {str(i): OVERRIDE_STATES[s] for i, s in pairs}


# --- per-version arrays ---------------------------------------------------------------------------
def ancestor_matrix(ids: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Row r: category ``ids[r]`` then its parent, grandparent, ... (-1 padded); ``ids`` sorted.

    Pointer jumping over the whole tree at once: one step per level, not per category. A parent
    not in ``ids`` ends the chain (the category counts as a root).
    """
    n = len(ids)
    at = np.minimum(np.searchsorted(ids, parents), max(n - 1, 0))
    parent_row = np.where((parents >= 0) & (ids[at] == parents), at, -1) if n else _EMPTY
    cols = [ids]
    cur = parent_row
    for _ in range(MAX_TREE_DEPTH):
        if not (cur >= 0).any():
            break
        cols.append(np.where(cur >= 0, ids[np.maximum(cur, 0)], -1))
        cur = np.where(cur >= 0, parent_row[np.maximum(cur, 0)], -1)
    return np.stack(cols, axis=1) if n else np.zeros((0, 1), np.int64)


class CatalogRules:
    """What the rules need of one version's catalogue, as arrays aligned with its ItemTable."""

    def __init__(self, table: ItemTable):
        self.table = table
        self.available = table.available != 0  # -1 (unknown) is not known to be unavailable
        self.available8 = table.available
        self.price = table.price.astype(np.float64)
        tree_ids = np.asarray(table.tree_ids, np.int64)
        tree_parents = np.asarray(table.tree_parents, np.int64)
        item_cats = table.category[table.category >= 0]
        cats = np.union1d(tree_ids, item_cats).astype(np.int64)
        parents = np.full(len(cats), -1, np.int64)
        if len(tree_ids):
            at = np.searchsorted(cats, tree_ids)
            parents[at] = tree_parents
        self.categories = cats  # every category a rule may name
        anc = ancestor_matrix(cats, parents)
        # one extra all -1 row: items of unknown category belong to none
        self.ancestors = np.vstack([anc, np.full((1, anc.shape[1]), -1, np.int64)])
        row = np.searchsorted(cats, table.category)
        row = np.minimum(row, max(len(cats) - 1, 0))
        found = (table.category >= 0) & (cats[row] == table.category) if len(cats) else row < 0
        self.item_row = np.where(found, row, len(cats)).astype(np.int64)

    def positions(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in the item table, known) for candidate ids; unknown ids get row 0."""
        pos = self.table.lookup(items)
        known = pos >= 0
        return np.where(known, pos, 0), known

    def category_match(self, p: np.ndarray, known: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """Items (table rows ``p``) whose category or an ancestor is in ``cats`` (sorted)."""
        rows = np.where(known, self.item_row[p], len(self.categories))
        return member(cats, self.ancestors[rows]).any(axis=1)

    def descendants(self, cats: np.ndarray) -> np.ndarray:
        """Categories at or below any of ``cats`` (sorted)."""
        hit = member(np.sort(cats), self.ancestors[:-1]).any(axis=1)
        return self.categories[hit]

    def availability(self, items: np.ndarray, overrides: Overrides) -> np.ndarray:
        """Live availability for response rows: 1, 0 or -1 (unknown), overrides applied."""
        p, known = self.positions(items)
        base = np.where(known, self.available8[p], -1).astype(np.int8) if len(self.table.ids) \
            else np.full(len(items), -1, np.int8)  # fmt: skip
        if len(overrides.ids):
            ov = overrides.lookup(items)
            base = np.where(ov == UNAVAILABLE, 0, np.where(ov == AVAILABLE, 1, base))
        return base.astype(np.int8)

    def unknown(self, cats: list[int]) -> list[int]:
        arr = np.asarray(cats, np.int64)
        return arr[~member(self.categories, arr)].tolist()


# --- one request's rules --------------------------------------------------------------------------
@dataclass
class RuleSet:
    """A request's rules, checked and compiled against one version and the live overrides."""

    catalog: CatalogRules
    overrides: Overrides
    include_unavailable: bool = False
    exclude_items: np.ndarray | None = None
    exclude_seen: np.ndarray | None = None
    scope: np.ndarray | None = None  # the endpoint's category (GET /popular?category_id)
    categories: np.ndarray | None = None
    exclude_categories: np.ndarray | None = None
    price_min: float | None = None
    price_max: float | None = None
    boost_factor: float | None = None
    boost_categories: np.ndarray | None = None
    boost_price: tuple[float, float] | None = None
    # what a cached list's view of these rules is keyed by (b"": the defaults); None: they
    # depend on the user (exclude_seen), so no view of a shared list may keep them
    key: bytes | None = None

    @property
    def plain(self) -> bool:
        """Only the default rules (availability and hidden items): answers can be cached."""
        return (
            not self.include_unavailable
            and self.exclude_items is None
            and self.exclude_seen is None
            and self.scope is None
            and self.categories is None
            and self.exclude_categories is None
            and self.price_min is None
            and self.price_max is None
            and self.boost_factor is None
        )

    def filter(self, items: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        """(keep mask, candidates removed per rule) for one candidate array."""
        cat = self.catalog
        p, known = cat.positions(items)
        checks: list[tuple[str, np.ndarray]] = []
        ov = self.overrides.lookup(items) if len(self.overrides.ids) else None
        if ov is not None:
            checks.append(("hidden", ov != HIDDEN))
        if not self.include_unavailable:
            avail = cat.available[p] | ~known if len(cat.table.ids) else np.ones(len(items), bool)
            if ov is not None:
                avail = np.where(ov == UNAVAILABLE, False, np.where(ov == AVAILABLE, True, avail))
            checks.append(("unavailable", avail))
        if self.exclude_items is not None:
            checks.append(("exclude_items", ~member(self.exclude_items, items)))
        if self.exclude_seen is not None:
            checks.append(("exclude_seen", ~member(self.exclude_seen, items)))
        if self.scope is not None:
            checks.append(("category_id", cat.category_match(p, known, self.scope)))
        if self.categories is not None:
            checks.append(("categories", cat.category_match(p, known, self.categories)))
        if self.exclude_categories is not None:
            checks.append(
                ("exclude_categories", ~cat.category_match(p, known, self.exclude_categories))
            )
        if self.price_min is not None or self.price_max is not None:
            checks.append(("price", self._in_band(p, known, self.price_min, self.price_max)))
        keep = np.ones(len(items), dtype=bool)
        removed: dict[str, int] = {}
        for name, ok in checks:
            dropped = int(np.count_nonzero(keep & ~ok))
            if dropped:
                removed[name] = dropped
            keep &= ok
        return keep, removed

    def _in_band(self, p, known, low: float | None, high: float | None) -> np.ndarray:
        """Items whose price is known and inside [low, high] (an unknown price never is)."""
        price = self.catalog.price[p] if len(self.catalog.table.ids) else np.full(len(p), np.nan)
        ok = known & ~np.isnan(price)
        if low is not None:
            ok &= price >= low
        if high is not None:
            ok &= price <= high
        return ok

    def boost(self, items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order of the candidates by boosted score, boosted mask) within one source's list.

        Non-negative scores (popularity, similarities) are multiplied as they are; a list with
        negative scores (ALS dot products, network logits) is first shifted into
        ``[span, 2 * span]``, so that a multiplier raises a matching item whatever the sign.
        """
        if self.boost_factor is None or not len(items):
            return np.arange(len(items)), np.zeros(len(items), bool)
        p, known = self.catalog.positions(items)
        match = np.ones(len(items), dtype=bool)
        if self.boost_categories is not None:
            match &= self.catalog.category_match(p, known, self.boost_categories)
        if self.boost_price is not None:
            match &= self._in_band(p, known, *self.boost_price)
        s = scores.astype(np.float64)
        low = float(s.min())
        if low < 0:  # shift into [span, 2 span]: a factor f > 2 lifts any item to the top
            s = s - low + max(float(s.max()) - low, 1e-9)
        boosted = s * np.where(match, self.boost_factor, 1.0)
        order = np.argsort(-boosted, kind="stable")
        return order, match[order]


def compile_rules(
    rules: Rules | None,
    catalog: CatalogRules,
    overrides: Overrides,
    *,
    where: str = "rules.",
    history: tuple[np.ndarray, np.ndarray] | None = None,
    has_user: bool = False,
    scope: int | None = None,
) -> RuleSet:
    """Check ``rules`` against the served catalogue and compile them (RuleError naming the field).

    ``where``: the field prefix of the request (``rules.`` in bodies, empty for query
    parameters); ``history``: the user's (items, event codes), for ``exclude_seen``;
    ``scope``: the endpoint's own category (``GET /popular?category_id``), kept in top-ups.
    """
    rules = rules or DEFAULT_RULES
    rs = RuleSet(catalog, overrides, include_unavailable=rules.include_unavailable)
    if scope is not None:
        rs.scope = np.asarray([scope], np.int64)
    rs.categories = _categories(catalog, rules.categories, f"{where}categories")
    rs.exclude_categories = _categories(
        catalog, rules.exclude_categories, f"{where}exclude_categories"
    )
    _band(rules.price_min, rules.price_max, f"{where}price_min")
    rs.price_min, rs.price_max = rules.price_min, rules.price_max
    if rules.exclude_items:
        rs.exclude_items = np.unique(np.asarray(rules.exclude_items, np.int64))
    if rules.exclude_seen:
        if not has_user:
            raise RuleError(f"{where}exclude_seen", "needs the request's user_id")
        codes = np.asarray([EVENT_CODES.index(e) for e in rules.exclude_seen], np.int64)
        items, events = history if history is not None else (_EMPTY, _EMPTY)
        rs.exclude_seen = np.unique(np.asarray(items)[member(np.sort(codes), events)])
    b = rules.boost
    if b is not None:
        at = f"{where}boost." if where else "boost_"  # query parameters are flat: boost_factor
        if not b.categories and b.price_min is None and b.price_max is None:
            raise RuleError(f"{where}boost" if where else "boost_factor",
                            "name categories, a price band, or both")  # fmt: skip
        rs.boost_factor = float(b.factor)
        rs.boost_categories = _categories(catalog, b.categories, f"{at}categories")
        if b.price_min is not None or b.price_max is not None:
            _band(b.price_min, b.price_max, f"{at}price_min")
            rs.boost_price = (b.price_min, b.price_max)
    return rs


def _categories(catalog: CatalogRules, cats: list[int] | None, name: str) -> np.ndarray | None:
    if not cats:  # absent or empty: no restriction
        return None
    unknown = catalog.unknown(cats)
    if unknown:
        raise RuleError(name, f"unknown category id(s) {unknown[:10]} in the served catalogue")
    return np.unique(np.asarray(cats, np.int64))


def _band(low: float | None, high: float | None, name: str) -> None:
    if low is not None and high is not None and low > high:
        raise RuleError(name, f"price_min {low:g} is above price_max {high:g}")
