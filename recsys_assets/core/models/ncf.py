"""Neural Collaborative Filtering: NeuMF (He et al., WWW 2017).

A GMF tower (element-wise product of user and item embeddings) and an MLP tower (a ReLU MLP
over the concatenated user and item embeddings of its own) fused by one final linear layer.
Trained on implicit feedback with ``n_negatives`` sampled negatives per positive, drawn
uniformly from the items the user has not interacted with (vectorised rejection sampling
against the CSR matrix), under a pointwise log loss ("bce", as in the paper) or a pairwise
"bpr" loss. Differences from the paper: no GMF/MLP pre-training, Adam with lazy row-wise updates of
the embedding tables (as SparseAdam; the rule of :mod:`row_optimizers`, run on tables packed
with their moments, :mod:`packed_tables`) and larger batches, for speed.

Validation and early stopping: ``TrainingData`` carries no validation targets, so the model
holds out, for up to ``val_users`` users with at least two distinct items, the item of their
last interaction (leave-one-out, as in the paper) and removes those pairs from its training
matrix. After each epoch it ranks the whole catalogue for those users (their other items
masked) and computes NDCG@10 of the held-out item; training stops after ``patience`` epochs
without a gain and keeps the best epoch's weights. The held-out pairs stay in the "seen" matrix
the base class masks at recommendation time. ``val_users`` 0 turns validation off (all
``n_epochs`` run on the full matrix).

Scoring all items for a batch of users: GMF is one matrix product (user ⊙ w_gmf) · itemᵀ; the
MLP's first layer splits into a user part and an item part (precomputed for the catalogue), so
only the later, narrower layers run per (user, item) pair, in memory-bounded chunks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recsys_assets.core.data.training_data import TrainingData
from recsys_assets.core.models.base import MAX_DENSE_ELEMENTS, Recommender, mask_rows
from recsys_assets.core.models.packed_tables import PackedTable, lazy_adam_
from recsys_assets.core.models.topk import (
    EXCLUDED,
    column_positions,
    restrict_columns,
    tiled_available,
    tiled_top,
    tiled_topk_dense,
    top_unordered,
    topk_dense,
)
from recsys_assets.core.models.torch_training import (
    DEVICES,
    check_budget,
    choose_device,
    resolve_threads,
    seed_everything,
    train_epochs,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

LOSSES = ("bce", "bpr")

# (users × items × hidden) elements of the per-pair MLP activations built at once when scoring
_PAIR_BLOCK = 2**23


class NeuMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, mlp_layers: list[int]):
        super().__init__()
        half = mlp_layers[0] // 2
        # tables outside autograd: the trainer gathers a batch's rows and updates only those
        self.gmf_user = nn.Parameter(torch.empty(n_users, factors), requires_grad=False)
        self.gmf_item = nn.Parameter(torch.empty(n_items, factors), requires_grad=False)
        self.mlp_user = nn.Parameter(torch.empty(n_users, half), requires_grad=False)
        self.mlp_item = nn.Parameter(torch.empty(n_items, half), requires_grad=False)
        self.half, self.factors = half, factors
        sizes = [2 * half, *mlp_layers[1:]]
        self.mlp = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = nn.Linear(factors + sizes[-1], 1)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb, std=0.01)
        for layer in self.mlp:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.kaiming_uniform_(self.out.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.out.bias)

    def mlp_parameters(self) -> list[nn.Parameter]:
        """The dense parameters (MLP layers and the fusing layer), trained by plain Adam."""
        return [*self.mlp.parameters(), *self.out.parameters()]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of (user, item) pairs (inference; training goes through ``pair_logits``)."""
        return self.pair_logits(
            self.gmf_user[users], self.gmf_item[items], self.mlp_user[users], self.mlp_item[items]
        )

    def pair_logits(self, gu, gi, mu, mi) -> torch.Tensor:
        """Logits from the gathered embedding rows of (user, item) pairs."""
        gmf = gu * gi
        x = torch.cat([mu, mi], dim=1)
        for layer in self.mlp:
            x = F.relu(layer(x))
        return self.out(torch.cat([gmf, x], dim=1)).squeeze(1)

    @torch.no_grad()
    def item_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item precomputation: GMF item factors and the item half of the first MLP layer."""
        if len(self.mlp):
            item_first = self.mlp_item @ self.mlp[0].weight[:, self.half :].T
        else:
            item_first = self.mlp_item
        return self.gmf_item, item_first

    def mlp_tail(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP tower's output from first-layer pre-activations ``x`` (..., width)."""
        w_mlp = self.out.weight[0, self.factors :]
        h = F.relu(x)
        for layer in self.mlp[1:]:
            h = F.relu(layer(h))
        return h @ w_mlp

    def user_first(self, users: torch.Tensor) -> torch.Tensor:
        first = self.mlp[0]
        return self.mlp_user[users] @ first.weight[:, : self.half].T + first.bias

    @torch.no_grad()
    def linearised_mlp(
        self, item_first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchor, value, slope): the MLP tower of item i linearised in the user around the
        average user's first-layer activation ``anchor``:
        mlp(u, i) ≈ value_i + (a_u − anchor) · slope_i.

        Exact wherever the user's ReLU pattern equals the average user's; a product form, so it
        ranks the whole catalogue with one matrix product (the candidate stage of scoring).
        """
        users = torch.arange(self.mlp_user.shape[0], device=item_first.device)
        anchor = torch.zeros(item_first.shape[1], device=item_first.device)
        for start in range(0, users.numel(), 65536):
            anchor += self.user_first(users[start : start + 65536]).sum(0)
        anchor /= max(1, users.numel())
        with torch.enable_grad():
            x = (anchor[None, :] + item_first).detach().requires_grad_(True)
            value = self.mlp_tail(x)
            (slope,) = torch.autograd.grad(value.sum(), x)
        return anchor, value.detach(), slope

    @torch.no_grad()
    def score_pairs(
        self, users: torch.Tensor, cols: torch.Tensor, parts: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Exact logits of each user's candidate items ``cols`` (len(users), C)."""
        gmf_items, item_first = parts
        w_gmf = self.out.weight[0, : self.factors]
        gmf = torch.einsum("uf,ucf->uc", self.gmf_user[users] * w_gmf, gmf_items[cols])
        if not len(self.mlp):
            w_mlp = self.out.weight[0, self.factors :]
            half = self.half
            mlp = (self.mlp_user[users] @ w_mlp[:half])[:, None] + item_first[cols] @ w_mlp[half:]
        else:
            mlp = self.mlp_tail(self.user_first(users)[:, None, :] + item_first[cols])
        return gmf + mlp + self.out.bias

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, parts: tuple[torch.Tensor, torch.Tensor]):
        """(len(users), n_items) logits: one product per tower, the MLP's tail chunked."""
        gmf_items, item_first = parts
        factors, half = self.factors, self.half
        w_gmf, w_mlp = self.out.weight[0, :factors], self.out.weight[0, factors:]
        scores = (self.gmf_user[users] * w_gmf) @ gmf_items.T + self.out.bias
        if not len(self.mlp):
            # no hidden layer: the tower is linear in the two embeddings, a product form too
            return (
                scores
                + (self.mlp_user[users] @ w_mlp[:half])[:, None]
                + (item_first @ w_mlp[half:])[None, :]
            )
        first = self.mlp[0]
        user_first = self.mlp_user[users] @ first.weight[:, :half].T + first.bias
        n_items, width = item_first.shape
        chunk = max(1, _PAIR_BLOCK // max(1, users.shape[0] * width))
        for start in range(0, n_items, chunk):
            stop = min(n_items, start + chunk)
            h = F.relu(user_first[:, None, :] + item_first[None, start:stop, :])
            for layer in self.mlp[1:]:
                h = F.relu(layer(h))
            scores[:, start:stop] += h @ w_mlp
        return scores


def seen_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted ``row * n_cols + col`` of the stored entries (CSR order is already sorted)."""
    m = matrix.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * m.shape[1] + m.indices.astype(np.int64)


def is_seen(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    q = users.astype(np.int64) * n_items + items
    pos = np.minimum(np.searchsorted(keys, q), max(keys.size - 1, 0))
    return keys[pos] == q if keys.size else np.zeros(q.shape, bool)


def sample_negatives(
    keys: np.ndarray,
    users: np.ndarray,
    n_items: int,
    rng: np.random.Generator,
    max_rounds: int = 20,
) -> np.ndarray:
    """One uniformly drawn unseen item per entry of ``users``, redrawn where it was seen.

    After ``max_rounds`` the few remaining collisions (users who saw most of the catalogue)
    are kept: a handful of false negatives, never a Python loop over interactions.
    """
    items = rng.integers(0, n_items, users.size)
    todo = np.arange(users.size)
    for _ in range(max_rounds):
        bad = todo[is_seen(keys, users[todo], items[todo], n_items)]
        if bad.size == 0:
            break
        items[bad] = rng.integers(0, n_items, bad.size)
        todo = bad
    return items


def holdout_last(
    data: TrainingData, n_users: int, rng: np.random.Generator
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(training matrix, validation users, their held-out items): each chosen user's most
    recent item removed from a copy of the matrix. Chosen among users with >= 2 items."""
    matrix = data.user_item.tocsr().copy()
    if n_users <= 0 or data.event_user.size == 0:
        return matrix, np.empty(0, np.int64), np.empty(0, np.int64)
    # event arrays are time-sorted: the last occurrence of a user is their latest event
    rev_user = data.event_user[::-1]
    users_with_events, first_in_rev = np.unique(rev_user, return_index=True)
    last_item = data.event_item[::-1][first_in_rev].astype(np.int64)
    eligible = np.diff(matrix.indptr)[users_with_events] >= 2
    cand = np.flatnonzero(eligible)
    pick = np.sort(rng.choice(cand, size=min(n_users, cand.size), replace=False))
    users, items = users_with_events[pick].astype(np.int64), last_item[pick]
    drop = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=matrix.shape)
    # zero the held-out entries, then drop them from the structure
    matrix = matrix - matrix.multiply(drop)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix.tocsr(), users, items


class NCFRecommender(Recommender):
    """NeuMF; see the module docstring."""

    name: ClassVar[str] = "ncf"
    # A trial trains up to 20 epochs with a validation pass each: ~40 s at scale 0.05 on a
    # quiet 2-core machine (234 s for the first trial under a load of 7). Three trials at most,
    # none started after a minute.
    tuning_trials: ClassVar[int] = 3
    tuning_timeout_seconds: ClassVar[float] = 60.0

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "factors": 32,
            "mlp_layers": [64, 32, 16],
            "loss": "bce",
            "n_negatives": 4,
            "n_epochs": 20,
            "batch_size": 4096,
            "learning_rate": 0.002,
            "patience": 3,
            # Wall-clock cap on the epochs (validation included; None = none): no epoch starts
            # that would end past it (torch_training.train_epochs). Scale 0.05: 20 epochs
            # with validation take ~35-44 s on a quiet machine, so it never binds there; scale
            # 1.0: ~27 s per epoch with validation, so 2 epochs. Those scored better on test
            # than the 5 of a 150 s cap (NDCG@10 0.0019 vs 0.0014, the whole graph on one
            # Xeon, benchmarks/bench_graph.py), and the graph took 82 s less with GRU4Rec's.
            "max_train_seconds": 75.0,
            "val_users": 2000,
            # Two-stage top-k (see _recommend_rows): this many candidates per user from the
            # linearised model, then exact NeuMF on them; 0 = exact NeuMF over the catalogue
            "score_candidates": 1000,
            # Stage one in this many dimensions (the item rows' top singular directions, see
            # _stage_one_items; 0 = all of them). Off: at scale 1.0 rank 24-32 saved only
            # ~12% of scoring, writing the (users × items) block costs more than its depth.
            "stage_one_rank": 0,
            "seed": 42,
            # Torch threads of the training epochs: one is faster on the shared 2-core machine
            # (see GRU4Rec's default and benchmarks/bench_torch_models.py, which times both);
            # 0 = one per core. Validation and scoring always use one per core.
            "num_threads": 1,
            "device": "auto",
        }

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        width = trial.suggest_categorical("mlp_width", [32, 64, 128])
        depth = trial.suggest_int("mlp_depth", 1, 3)
        return {
            "factors": trial.suggest_int("factors", 8, 128, log=True),
            "mlp_layers": [max(2, width // 2**i) for i in range(depth)],
            "loss": trial.suggest_categorical("loss", list(LOSSES)),
            "n_negatives": trial.suggest_int("n_negatives", 1, 10),
            "batch_size": trial.suggest_categorical("batch_size", [1024, 4096, 16384]),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        }

    def _validate_params(self) -> None:
        p = self.params
        layers = p["mlp_layers"]
        if not (
            isinstance(layers, list | tuple)
            and layers
            and all(isinstance(h, int | np.integer) and h >= 2 for h in layers)
        ):
            raise ValueError(
                f"mlp_layers must be a non-empty list of integers >= 2, got {layers!r}"
            )
        for key in ("factors", "n_negatives", "n_epochs", "batch_size", "patience"):
            if not (isinstance(p[key], int | np.integer) and p[key] > 0):
                raise ValueError(f"{key} must be a positive integer, got {p[key]!r}")
        if not (isinstance(p["score_candidates"], int | np.integer) and p["score_candidates"] >= 0):
            raise ValueError(
                f"score_candidates must be an integer >= 0, got {p['score_candidates']!r}"
            )
        if not (isinstance(p["stage_one_rank"], int | np.integer) and p["stage_one_rank"] >= 0):
            raise ValueError(f"stage_one_rank must be an integer >= 0, got {p['stage_one_rank']!r}")
        if not (isinstance(p["val_users"], int | np.integer) and p["val_users"] >= 0):
            raise ValueError(f"val_users must be an integer >= 0, got {p['val_users']!r}")
        if p["loss"] not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {p['loss']!r}")
        check_budget(p["max_train_seconds"])
        if not p["learning_rate"] > 0:
            raise ValueError(f"learning_rate must be > 0, got {p['learning_rate']!r}")
        if p["device"] not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {p['device']!r}")

    # --- training -----------------------------------------------------------------------------

    def _fit(self, data: TrainingData) -> None:
        p = self.params
        rng = seed_everything(int(p["seed"]))
        self._device = dev = choose_device(p["device"])
        matrix, val_users, val_items = holdout_last(data, int(p["val_users"]), rng)
        self.net = NeuMF(data.n_users, data.n_items, int(p["factors"]), list(p["mlp_layers"]))
        self.net.reset_parameters()
        self.net.to(dev)
        opts = self._optimizers()
        keys = seen_keys(data.user_item)  # negatives avoid held-out items too
        pos_users = np.repeat(np.arange(data.n_users, dtype=np.int64), np.diff(matrix.indptr))
        pos_items = matrix.indices.astype(np.int64)
        log.info(
            "ncf: %d positives x %d negatives, %d validation users, device %s, %d threads",
            pos_users.size,
            p["n_negatives"],
            val_users.size,
            dev,
            resolve_threads(int(p["num_threads"])),
        )
        if pos_users.size == 0:
            raise ValueError("ncf: no positive interaction left to train on")
        val_exclude = matrix[val_users] if val_users.size else None

        def run_epoch(epoch: int) -> tuple[float, int]:
            return self._run_epoch(pos_users, pos_items, keys, data.n_items, rng, opts)

        def validate() -> float:
            return self._validation_ndcg(val_users, val_items, val_exclude)

        try:
            self.history = train_epochs(
                "ncf",
                self.net,
                int(p["n_epochs"]),
                run_epoch,
                validate if val_users.size else None,
                int(p["patience"]),
                "ndcg@10",
                p["max_train_seconds"],
                train_threads=int(p["num_threads"]),
            )
        finally:
            self._unpack_tables()
        self._parts = None
        self._linear = None

    def _optimizers(self) -> tuple:
        """(packed user and item tables, Adam of the dense layers, [global step]).

        The user tables (GMF, MLP) sit side by side with their LazyAdam moments, the item
        tables likewise (:mod:`packed_tables`): a step reads and writes each touched row once.
        The net's tables are views into them until :meth:`_unpack_tables`.
        """
        net = self.net
        tables = (
            PackedTable([net.gmf_user, net.mlp_user]),
            PackedTable([net.gmf_item, net.mlp_item]),
        )
        net.gmf_user.data, net.mlp_user.data = tables[0].part(0), tables[0].part(1)
        net.gmf_item.data, net.mlp_item.data = tables[1].part(0), tables[1].part(1)
        lr = float(self.params["learning_rate"])
        return tables, torch.optim.Adam(net.mlp_parameters(), lr=lr), [0]

    def _unpack_tables(self) -> None:
        """The net's tables as contiguous tensors of their own (the packed state is freed)."""
        for name in ("gmf_user", "mlp_user", "gmf_item", "mlp_item"):
            param = getattr(self.net, name)
            param.data = param.data.contiguous()

    def _run_epoch(self, pos_users, pos_items, keys, n_items, rng, opts) -> tuple[float, int]:
        p, dev, net = self.params, self._device, self.net
        n_neg = int(p["n_negatives"])
        neg_users = np.repeat(pos_users, n_neg)
        neg_items = sample_negatives(keys, neg_users, n_items, rng)
        bce = p["loss"] == "bce"
        # one shuffle per epoch, then contiguous slices: no per-batch gather of the epoch arrays
        if bce:
            order = rng.permutation(pos_users.size + neg_users.size)
            users = np.concatenate([pos_users, neg_users])[order]
            items = np.concatenate([pos_items, neg_items])[order]
            labels = torch.from_numpy((order < pos_users.size).astype(np.float32))
            positives = None
        else:
            order = rng.permutation(neg_users.size)
            users, items = neg_users[order], neg_items[order]
            positives = torch.from_numpy(np.repeat(pos_items, n_neg)[order])
            labels = None
        users_t, items_t = torch.from_numpy(users), torch.from_numpy(items)
        tables, dense_opt, step = opts
        dense = dense_opt.param_groups[0]["params"]
        batch = int(p["batch_size"])
        lr = float(p["learning_rate"])
        total = 0.0
        for start in range(0, users.size, batch):
            sl = slice(start, start + batch)
            u, i = users_t[sl].to(dev), items_t[sl].to(dev)
            if not bce:
                i = torch.cat([positives[sl].to(dev), i])
            # each touched user / item row once: its packed block (parameters and moments),
            # then the batch's rows from that block as the leaves autograd differentiates
            # (GMF and MLP halves as separate leaves: slicing one leaf cost a zero-filled
            # gradient per slice in the backward pass)
            blocks, leaves = [], []
            f = net.factors
            for table, idx in zip(tables, (u, i), strict=True):
                rows, inv = torch.unique(idx, return_inverse=True)
                block = table.gather(rows)
                blocks.append((table, rows, inv, block))
                emb = block[:, 0].index_select(0, inv)
                leaves += [emb[:, :f].requires_grad_(), emb[:, f:].requires_grad_()]
            gu, mu, gi, mi = leaves
            if bce:
                logits = net.pair_logits(gu, gi, mu, mi)
                loss = F.binary_cross_entropy_with_logits(logits, labels[sl].to(dev))
            else:
                n = u.shape[0]
                logits = net.pair_logits(gu.repeat(2, 1), gi, mu.repeat(2, 1), mi)
                loss = -F.logsigmoid(logits[:n] - logits[n:]).mean()
            grads = torch.autograd.grad(loss, leaves + dense)
            step[0] += 1
            for k, (table, rows, inv, block) in enumerate(blocks):
                g = torch.cat(grads[2 * k : 2 * k + 2], 1)
                summed = g.new_zeros(rows.numel(), g.shape[1]).index_add_(0, inv, g)
                lazy_adam_(block, summed, lr, step[0])
                table.write(rows, block)
            for q, g in zip(dense, grads[len(leaves) :], strict=True):
                q.grad = g
            dense_opt.step()
            total += float(loss.detach()) * u.shape[0]
        # events = training pairs (positives and sampled negatives) seen this epoch
        n_pairs = users.size if bce else 2 * users.size
        return total / max(users.size, 1), int(n_pairs)

    def _validation_ndcg(self, users, items, exclude: sp.csr_matrix) -> float:
        """NDCG@10 of the held-out item in the lists the model would recommend (two-stage
        when ``score_candidates`` is set: the same lists, at a fraction of the cost)."""
        self._parts = self._linear = None  # the weights changed since the last call
        if self._two_stage():
            cols, _ = self._two_stage_topk(users, 10, exclude)
            hit = cols == items[:, None]
            rank = np.where(hit.any(axis=1), hit.argmax(axis=1), 10)
            return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())
        parts = self.net.item_parts()
        gains = np.zeros(users.size)
        step = max(1, (1 << 24) // max(1, self.net.gmf_item.shape[0]))
        for start in range(0, users.size, step):
            sl = slice(start, start + step)
            u = torch.from_numpy(users[sl]).to(self._device)
            scores = self.net.score_all(u, parts).cpu().numpy()
            rows = np.arange(scores.shape[0])
            target = scores[rows, items[sl]].copy()
            ex = exclude[sl]
            scores[np.repeat(rows, np.diff(ex.indptr)), ex.indices] = -np.inf
            rank = (scores > target[:, None]).sum(axis=1)  # 0-based
            gains[sl] = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)
        return float(gains.mean())

    # --- inference ----------------------------------------------------------------------------

    def _item_parts(self):
        if getattr(self, "_parts", None) is None:
            self._parts = self.net.item_parts()
        return self._parts

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.asarray(user_rows, dtype=np.int64)).to(self._device)
        return self.net.score_all(u, self._item_parts()).cpu().numpy()

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``width`` in two stages: candidates, then exact NeuMF scores on them.

        Exact scoring runs the MLP tower for every (user, item) pair, which dominated: 3,912
        users × 11k items took 16–31 s on 2 shared cores. Stage one ranks the catalogue with
        the model linearised in the user (GMF exactly, plus the MLP tower's first-order
        expansion around the average user: one matrix product) and keeps the best
        ``score_candidates`` unseen items; stage two scores those with the full NeuMF and
        takes the top ``width``. The answer equals exact scoring whenever the exact top
        ``width`` lies among the candidates (tests/test_ncf.py measures the overlap).

        At scale 1.0 stage one is nearly all of the cost (83.5k test users × 221k items with
        positives: the product, then the selection of 1,000): ~190 s CPU for the top-50 lists
        on 2 shared cores, where the three-product, whole-catalogue version took ~510 s. Fewer
        candidates would be faster (100: ~90 s) but change the lists: on the scale-0.05
        model trained 20 epochs, 1,000 candidates already match exact NeuMF on only 85% of
        the top-50, 100 on 63% (benchmarks/bench_torch_scoring.py). A 4,096-user call on one
        thread: ~10.7 s with a fresh score block per slice and torch.topk (product 2.6 s,
        selection 3.7-4.4 s, stage two ~0.6-1.5 s); ~3.2 s scored and selected a column tile
        at a time (topk.tiled_top: products 1.0 s, selection ~1.2 s, stage two ~1.0 s).
        """
        if not self._two_stage():
            return super()._recommend_rows(user_rows, width, exclude_seen)
        return self._two_stage_topk(
            user_rows, width, self._seen[user_rows] if exclude_seen else None
        )

    def _two_stage(self) -> bool:
        n_cand = int(self.params["score_candidates"])
        # (without a hidden layer the MLP tower is a product form already: exact is cheap)
        return 0 < n_cand < self.net.gmf_item.shape[0] and len(self.net.mlp) > 0

    def _two_stage_topk(
        self, user_rows: np.ndarray, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n_cand = max(int(self.params["score_candidates"]), width)
        subset, items = self._stage_one()
        n_items = int(self.net.gmf_item.shape[0])
        most_excluded = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
        if subset.size < n_items and subset.size - most_excluded < n_cand:
            # too few items with positives left for a full candidate list: rank them all
            subset = np.arange(n_items)
            items = self._stage_one_items(subset)
        n_cand = min(n_cand, subset.size)
        sub_exclude = None
        if exclude is not None:
            sub_exclude = restrict_columns(exclude, column_positions(subset, n_items))
        cand = np.empty((user_rows.size, n_cand), dtype=np.int64)
        step = max(1, MAX_DENSE_ELEMENTS // items.shape[0])
        # one score block for every slice: a fresh 128 MiB tensor per slice was fresh pages
        # for the kernel to fault in, and the product took 2.6 s instead of ~1.4 s a 4,096-user
        # call (scale 1.0, one thread)
        tiled = tiled_available() and self._device.type == "cpu"
        block = None if tiled else torch.empty(min(step, user_rows.size), items.shape[0])
        for start in range(0, user_rows.size, step):
            sl = slice(start, start + step)
            if tiled:  # scored and selected a column tile at a time (topk.tiled_top)
                x = self._stage_one_users(user_rows[sl])

                def score_into(c0, c1, out, x=x):
                    torch.mm(x, items[c0:c1].T, out=torch.from_numpy(out))

                ex = None if sub_exclude is None else sub_exclude[sl]
                vals, pos = tiled_top(x.shape[0], items.shape[0], n_cand, score_into, ex)
                cand[sl] = np.where(vals > EXCLUDED, pos, -1)
                continue
            scores = self._linear_score(user_rows[sl], items, block).numpy()
            if sub_exclude is not None:
                mask_rows(scores, sub_exclude[sl])
            vals, pos = top_unordered(scores, n_cand)
            # excluded (-inf) columns only where a row ran out of items
            cand[sl] = np.where(vals > EXCLUDED, pos, -1)
        cand = np.where(cand >= 0, subset[np.maximum(cand, 0)], -1)
        cand = np.sort(cand, axis=1)  # ascending columns: ties below go to the lower column
        excluded = cand < 0
        exact = np.empty(cand.shape, dtype=np.float32)
        parts = self._item_parts()
        widest = max(self.net.factors, *(layer.in_features for layer in self.net.mlp))
        step = max(1, _PAIR_BLOCK // (n_cand * widest))
        for start in range(0, user_rows.size, step):
            sl = slice(start, start + step)
            u = torch.from_numpy(np.asarray(user_rows[sl], dtype=np.int64)).to(self._device)
            c = torch.from_numpy(np.maximum(cand[sl], 0)).to(self._device)
            exact[sl] = self.net.score_pairs(u, c, parts).cpu().numpy()
        exact[excluded] = -np.inf
        pos, vals = topk_dense(np.ascontiguousarray(exact, dtype=np.float32), width)
        cols = np.take_along_axis(cand, np.maximum(pos, 0), axis=1)
        cols = np.where(pos >= 0, cols, -1)
        if cols.shape[1] < width:  # fewer candidates than width: the catalogue ran out
            cols = np.pad(cols, ((0, 0), (0, width - cols.shape[1])), constant_values=-1)
            vals = np.pad(vals, ((0, 0), (0, width - vals.shape[1])), constant_values=-np.inf)
        return cols, vals

    def _stage_one(self) -> tuple[np.ndarray, torch.Tensor]:
        """(columns, item matrix) of stage one, built once per fitted model.

        Only items with a positive interaction are ranked in stage one: the others were only
        ever sampled as negatives, so the network learned nothing that lifts them, and at
        scale 1.0 they were 47% of the 417k-item catalogue (221k had positives). What this
        changes against exact NeuMF over the whole catalogue: benchmarks/bench_torch_scoring.py.
        """
        if getattr(self, "_linear", None) is None:
            # (called during fit too, by validation: the catalogue size from the network)
            n_items = int(self.net.gmf_item.shape[0])
            positives = np.bincount(self._seen.indices, minlength=n_items) > 0
            subset = np.flatnonzero(positives) if positives.any() else np.arange(n_items)
            self._linear = (subset, self._stage_one_items(subset))
        return self._linear

    def _stage_one_items(self, subset: np.ndarray) -> torch.Tensor:
        """Item rows ``[gmf_i, slope_i] V, value_i`` of ``subset``, so that stage one is one
        product with the user rows ``[w_gmf ⊙ gmf_u, a_u − anchor] V, 1`` (one pass that
        writes the score block once; three products and two additions were memory-bound).

        ``V`` projects on the top ``stage_one_rank`` right singular vectors of the item rows
        (identity when 0 or not smaller): the product is the bulk of scoring at scale 1.0
        (83k users × 235k items), and candidates only need to contain the exact top-k.
        """
        gmf_items, item_first = self._item_parts()
        anchor, value, slope = self.net.linearised_mlp(item_first)
        idx = torch.from_numpy(subset).to(self._device)
        rows = torch.cat([gmf_items, slope], 1).index_select(0, idx)
        rank = int(self.params["stage_one_rank"])
        self._projection = None
        if 0 < rank < rows.shape[1]:
            # right singular vectors from the small Gram matrix (d × d, d = factors + width)
            _, vecs = torch.linalg.eigh(rows.T.double() @ rows.double())
            self._projection = vecs[:, -rank:].float().contiguous()
            rows = rows @ self._projection
        self._anchor = anchor
        return torch.cat([rows, value.index_select(0, idx)[:, None]], 1).contiguous()

    @torch.no_grad()
    def _stage_one_users(self, user_rows: np.ndarray) -> torch.Tensor:
        """User rows ``[w_gmf ⊙ gmf_u, a_u − anchor] V, 1`` of stage one (see
        ``_stage_one_items``)."""
        net = self.net
        u = torch.from_numpy(np.asarray(user_rows, dtype=np.int64)).to(self._device)
        w_gmf = net.out.weight[0, : net.factors]
        x = torch.cat([net.gmf_user[u] * w_gmf, net.user_first(u) - self._anchor], 1)
        if self._projection is not None:
            x = x @ self._projection
        return torch.cat([x, torch.ones(u.numel(), 1, device=u.device)], 1)

    def _linear_score(
        self, user_rows: np.ndarray, items: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Stage one: GMF plus the linearised MLP tower (a product form) for ``items``; on
        the CPU into the leading rows of ``out`` when given (returned: those rows)."""
        x = self._stage_one_users(user_rows)
        with torch.no_grad():
            if out is None or x.device.type != "cpu":
                return (x @ items.T).cpu()
            return torch.mm(x, items.T, out=out[: x.shape[0]])

    def _unit_items(self) -> np.ndarray:
        """Unit-length concatenated GMF and MLP item embeddings, built once per network: the
        normalisation over the catalogue ran for every 80-item slice of ``similar_items``
        before, most of its time at scale 1.0 (~250 neighbour lists a second)."""
        cache = getattr(self, "_unit_cache", None)
        if cache is None or cache[0] is not self.net:
            w = torch.cat([self.net.gmf_item, self.net.mlp_item], 1).detach()
            w = w.cpu().numpy()
            unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            cache = self._unit_cache = (self.net, np.ascontiguousarray(unit))
        return cache[1]

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        # item similarity: cosine of the concatenated GMF and MLP item embeddings
        unit = self._unit_items()
        return unit[item_cols] @ unit.T

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """As the base class (``_score_items`` in slices, the item itself excluded), scored
        and ranked a column tile at a time with numba (:func:`topk.tiled_topk_dense`), else
        into one reused score block."""
        unit = self._unit_items()
        n, m = item_cols.size, unit.shape[0]
        self_mask = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), item_cols)), shape=(n, m))
        if not tiled_available():
            step = max(1, MAX_DENSE_ELEMENTS // m)  # (the base class's slices)
            block = np.empty((min(n, step), m), dtype=np.float32)

            def score(rows: np.ndarray) -> np.ndarray:
                return np.matmul(unit[item_cols[rows]], unit.T, out=block[: rows.size])

            return self._dense_topk(np.arange(n), score, width, self_mask)
        width = min(width, m)
        cols = np.empty((n, width), dtype=np.int64)
        vals = np.empty((n, width), dtype=np.float32)
        step = max(1, MAX_DENSE_ELEMENTS // m)
        for start in range(0, n, step):
            queries = unit[item_cols[start : start + step]]
            sl = slice(start, start + queries.shape[0])

            def score_into(c0, c1, out, queries=queries):
                np.matmul(queries, unit[c0:c1].T, out=out)

            cols[sl], vals[sl] = tiled_topk_dense(
                queries.shape[0], m, width, score_into, self_mask[sl]
            )
        return cols, vals

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        p = self.params
        self._device = choose_device(p["device"])
        self.net = NeuMF(
            int(self._user_ids.size),
            int(self._item_ids.size),
            int(p["factors"]),
            list(p["mlp_layers"]),
        )
        self.net.load_state_dict(
            {
                k[4:]: torch.from_numpy(np.array(v))
                for k, v in arrays.items()
                if k.startswith("net.")
            }
        )
        self.net.to(self._device).eval()
        self._parts = None
        self._linear = None
