"""GRU4Rec's forward pass in plain numpy: the service runs a trained GRU4Rec without torch.

Input: the arrays of ``GRU4RecRecommender.export_numpy()`` and item sequences as *column
indices* of the model's catalogue (unknown items already dropped, most recent last). This module
imports numpy only; it is the one copy of the forward pass: the offline model
(``recsys_assets.core.models.gru4rec``) imports it from here, and the service
(:mod:`recsys_serving.gru_live`) runs it on a request's items.

Array layout (all float32 unless said otherwise):

- ``input_mode`` (int64 scalar): 0 = constrained embedding (the input of item ``i`` is row ``i``
  of ``output_weight``), 1 = separate embedding (``input_embedding`` (n_items, d)), 2 = one-hot
  input through a GRU embedding layer (``onehot_wx`` (n_items, 3h), ``onehot_wh`` (h, 3h),
  ``onehot_bh`` (3h)) that is the first recurrent layer itself, gates ordered (candidate,
  reset, update) as in the original code;
- ``n_layers`` (int64 scalar): the ``torch.nn.GRUCell`` layers ``layer{i}_weight_ih``
  (3h, n_in), ``layer{i}_weight_hh`` (3h, h), ``layer{i}_bias_ih``, ``layer{i}_bias_hh`` (3h),
  gates ordered (reset, update, new) as in torch;
- ``output_weight`` (n_items, h) and ``output_bias`` (n_items): score = h · W_i + b_i.
"""

from __future__ import annotations

import numpy as np

INPUT_CONSTRAINED, INPUT_EMBEDDING, INPUT_ONEHOT = 0, 1, 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # float32 in, float32 out; the clip keeps exp from overflowing for large negative inputs
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)


def pad_sequences(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned (n, max_len) column matrix and its mask from concatenated sequences.

    Right alignment makes every sequence end at the last step, so the hidden state after the
    last step is each sequence's own; the masked leading steps leave the zero state untouched.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.size
    width = int(lengths.max()) if n else 0
    cols = np.zeros((n, width), dtype=np.int64)
    mask = np.arange(width)[None, :] >= (width - lengths)[:, None]
    cols[mask] = np.asarray(flat, dtype=np.int64)
    return cols, mask


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = np.split(gi, 3, axis=1)
    h_r, h_z, h_n = np.split(gh, 3, axis=1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def _onehot_cell(cols, h, wx, wh, bh):
    vx = wx[cols] + bh
    vh = h @ wh
    vx_x, vx_r, vx_z = np.split(vx, 3, axis=1)
    vh_x, vh_r, vh_z = np.split(vh, 3, axis=1)
    r = _sigmoid(vx_r + vh_r)
    z = _sigmoid(vx_z + vh_z)
    cand = np.tanh(r * vh_x + vx_x)
    return (1.0 - z) * h + z * cand


def session_hidden(weights: dict[str, np.ndarray], cols: np.ndarray, mask: np.ndarray):
    """Final hidden state (n, h) of the last layer after each (padded) sequence."""
    mode = int(weights["input_mode"])
    n_layers = int(weights["n_layers"])
    layers = [
        tuple(weights[f"layer{i}_{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        for i in range(n_layers)
    ]
    n = cols.shape[0]
    hidden = []
    if mode == INPUT_ONEHOT:
        hidden.append(np.zeros((n, weights["onehot_wh"].shape[0]), np.float32))
    hidden += [np.zeros((n, w[1].shape[1]), np.float32) for w in layers]
    table = {INPUT_CONSTRAINED: "output_weight", INPUT_EMBEDDING: "input_embedding"}.get(mode)
    for t in range(cols.shape[1]):
        live = mask[:, t : t + 1]
        if mode == INPUT_ONEHOT:
            new = _onehot_cell(
                cols[:, t],
                hidden[0],
                weights["onehot_wx"],
                weights["onehot_wh"],
                weights["onehot_bh"],
            )
            hidden[0] = np.where(live, new, hidden[0])
            x, first = hidden[0], 1
        else:
            x, first = weights[table][cols[:, t]], 0
        for i, w in enumerate(layers):
            j = first + i
            new = _gru_cell(x, hidden[j], *w)
            hidden[j] = np.where(live, new, hidden[j]).astype(np.float32)
            x = hidden[j]
    return hidden[-1]


def session_scores(
    weights: dict[str, np.ndarray], flat: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Scores (n, n_items) of every catalogue item as the next item of each sequence."""
    cols, mask = pad_sequences(flat, lengths)
    h = session_hidden(weights, cols, mask)
    return h @ weights["output_weight"].T + weights["output_bias"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns per row, score descending then column ascending: (cols, scores)."""
    k = min(int(k), scores.shape[1])
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < scores.shape[1]
        else (np.broadcast_to(np.arange(scores.shape[1]), scores.shape))
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def next_item_scores(weights: dict[str, np.ndarray], cols: np.ndarray) -> np.ndarray:
    """Scores (n_items,) of every item after one sequence of known columns (oldest first).

    The sequence runs as a batch of one (one small GEMV per gate block and step); the scores are
    a single (n_items x h) matrix-vector product, the cost that dominates a live request.
    """
    cols = np.asarray(cols, dtype=np.int64).reshape(1, -1)
    h = session_hidden(weights, cols, np.ones(cols.shape, dtype=bool))[0]
    return weights["output_weight"] @ h + weights["output_bias"]


def check_weights(weights: dict[str, np.ndarray], where: str = "weights") -> int:
    """Check names, dtypes and shapes against the layout above; returns the number of items.

    ValueError naming the array, so a bad export is refused at publish time, not in a request.
    """

    def need(name: str, ndim: int) -> np.ndarray:
        if name not in weights:
            raise ValueError(f"{where}: missing array {name!r} (have {sorted(weights)})")
        arr = np.asarray(weights[name])
        if arr.ndim != ndim:
            raise ValueError(f"{where}.{name}: want {ndim} dimensions, got shape {arr.shape}")
        if ndim and arr.dtype != np.float32:
            raise ValueError(f"{where}.{name}: want float32, got {arr.dtype}")
        return arr

    mode, n_layers = int(need("input_mode", 0)), int(need("n_layers", 0))
    if mode not in (INPUT_CONSTRAINED, INPUT_EMBEDDING, INPUT_ONEHOT) or n_layers < 1:
        raise ValueError(f"{where}: input_mode {mode} / n_layers {n_layers} out of range")
    out_w, out_b = need("output_weight", 2), need("output_bias", 1)
    n_items = out_w.shape[0]
    if out_b.shape != (n_items,):
        raise ValueError(f"{where}.output_bias: want shape ({n_items},), got {out_b.shape}")
    if mode == INPUT_CONSTRAINED:
        n_in = out_w.shape[1]
    elif mode == INPUT_EMBEDDING:
        emb = need("input_embedding", 2)
        if emb.shape[0] != n_items:
            raise ValueError(f"{where}.input_embedding: want {n_items} rows, got {emb.shape[0]}")
        n_in = emb.shape[1]
    else:
        wx, wh, bh = need("onehot_wx", 2), need("onehot_wh", 2), need("onehot_bh", 1)
        h0 = wh.shape[0]
        if wx.shape != (n_items, 3 * h0) or wh.shape != (h0, 3 * h0) or bh.shape != (3 * h0,):
            raise ValueError(
                f"{where}.onehot_*: want ({n_items}, {3 * h0}), ({h0}, {3 * h0}), "
                f"({3 * h0},); got {wx.shape}, {wh.shape}, {bh.shape}"
            )
        n_in = h0
    for i in range(n_layers):
        w_ih, w_hh = need(f"layer{i}_weight_ih", 2), need(f"layer{i}_weight_hh", 2)
        b_ih, b_hh = need(f"layer{i}_bias_ih", 1), need(f"layer{i}_bias_hh", 1)
        h = w_hh.shape[1]
        want = ((3 * h, n_in), (3 * h, h), (3 * h,), (3 * h,))
        got = (w_ih.shape, w_hh.shape, b_ih.shape, b_hh.shape)
        if got != want:
            raise ValueError(f"{where}.layer{i}_*: want shapes {want}, got {got}")
        n_in = h
    if out_w.shape[1] != n_in:
        raise ValueError(
            f"{where}.output_weight: want {n_in} columns (last layer), got {out_w.shape}"
        )
    return n_items
