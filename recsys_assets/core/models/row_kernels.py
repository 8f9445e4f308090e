"""Numba kernels for the CPU training step of GRU4Rec: in-place packed-row Adagrad, the dense
Adagrad of the GRU weights, the BPR-max gradient over the sampled columns, and the GRU gates
forward and backward (used by :mod:`gru4rec_layers`).

Written as torch ops, these steps moved more memory than they computed. The packed output
table (:class:`packed_tables.PackedTable`, a ``(3, 225)`` block per item at 417k items) was
gathered into a ~2,200-row copy, updated in six passes and written back: ~5.9 MB cold each way
per step, ~5.7 of a 13 ms step at scale 1.0. Here a step reads the parameter slot of its rows
once (:func:`gather_slot`, a third of the bytes) and :func:`adagrad_rows` updates each row's
parameters, accumulator and momentum in place, in one pass; :func:`adagrad_flat` does the same
for dense tensors (eight torch passes over the GRU weights before), and :func:`bpr_max_unique`
computes the BPR-max loss and its gradient row by row while the row is in L1 (about twenty
torch passes over the 80 × 2,128 score block before), reading the scores per unique row and
summing the gradient back per unique row itself.

The update rules are those of :mod:`row_optimizers` / :mod:`packed_tables`, with the same
float32 operations in the same order (``acc + g·g``, ``sqrt(acc + eps)``, ``mom·μ − lr·step``);
results match the torch path within a float32 rounding (torch may fuse a multiply-add). The
BPR-max kernel adds float32 block sums in float64 and its ``exp`` is a polynomial
(``row_kernels_jit._exp``, within 1e-7 relative of ``exp``): it is as close to a float64
evaluation as :func:`gru4rec_output.bpr_max_grad` in float32 is (~1e-6 of the largest
entry). The GRU gates use the same ``exp`` for ``sigmoid`` and ``tanh``.

All kernels are compiled with numpy's error model: with Python's, every division checked for
zero and no loop with one was vectorised (the dense Adagrad ran slower than eight torch
passes).

Compiled on first use and cached on disk (``cache=True``: a few seconds once per machine and
numba version). :func:`usable` is False when numba cannot be imported; the callers then use
their torch path, as they do on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_assets.core.models.optional_numba import import_kernels

# Switch for the callers (tests set it False to run the torch path on the same CPU tensors)
ENABLED = True
_jit = None  # the kernel module once imported; False when numba could not be imported


def available() -> bool:
    """Whether numba and the kernels import (tried once; numba is an optional speed-up)."""
    global _jit
    if _jit is None:
        _jit = import_kernels("row_kernels_jit", "torch ops")
    return _jit is not False


def warm_up() -> None:
    """Load (or compile) every kernel now, on tiny arrays: ~0.7 s on the first call in a
    process (importing numba, reading the on-disk cache), which would otherwise land in
    the first training steps; nothing when the kernels are unavailable."""
    if not available():
        return
    state, rows, grad = _empty(4, 3, 16), np.arange(2), _empty(2, 16)
    state.fill(0.0)
    grad.fill(0.5)
    gather_slot(state, rows)
    adagrad_rows(state, rows, grad, 0.1, 0.5, 1e-6)
    flat = state.reshape(-1)[:16]
    adagrad_flat(flat, flat.copy(), flat.copy(), grad[0].copy(), 0.1, 0.5, 1e-6)
    bpr_max_unique(grad[:, :4].copy(), np.arange(3), 1.0, 0.5, 1.0)
    gates = grad.repeat(3, axis=1)
    out, gates = gru_forward(gates, gates.copy(), grad)
    gru_backward(grad, gates, gates, grad)


def _kernels():
    if not available():
        raise RuntimeError("the numba kernels are unavailable (see row_kernels.usable)")
    return _jit


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run on these torch tensors: numba importable and enabled, all
    on the CPU, float32 (what the kernels are compiled for) and contiguous (they index raw
    memory)."""
    return (
        ENABLED
        and all(
            t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
            for t in tensors
        )
        and available()
    )


def _empty(*shape: int) -> np.ndarray:
    """An uninitialised float32 array at a 64-byte boundary (torch's allocator). numpy's
    arrays start at 16-byte boundaries, and the kernels' AVX-512 loops ran up to 3x slower on
    them (BPR-max: 1.7 against 0.6 ms on the same scores): every 64-byte load straddled two
    cache lines."""
    return torch.empty(shape, dtype=torch.float32).numpy()


def gather_slot(state: np.ndarray, rows: np.ndarray, slot: int = 0) -> np.ndarray:
    """``state[rows, slot]`` of a packed ``(n, 3, width)`` table as a new contiguous array."""
    out = _empty(rows.shape[0], state.shape[2])
    _kernels().gather_slot(state, rows, slot, out)
    return out


def adagrad_rows(
    state: np.ndarray, rows: np.ndarray, grad: np.ndarray, lr: float, momentum: float, eps: float
) -> None:
    """IndexedAdagradM on the unique ``rows`` of a packed ``(n, 3, width)`` table, in place
    (slots: params, accumulator, momentum); ``grad`` is ``(len(rows), width)``."""
    _kernels().adagrad_rows(state, rows, grad, float(lr), float(momentum), float(eps))


def adagrad_flat(
    p: np.ndarray,
    acc: np.ndarray,
    mom: np.ndarray,
    grad: np.ndarray,
    lr: float,
    momentum: float,
    eps: float,
) -> None:
    """IndexedAdagradM's dense step on flat arrays, in place (``mom`` unused at momentum 0)."""
    _kernels().adagrad_flat(p, acc, mom, grad, float(lr), float(momentum), float(eps))


def bpr_max_unique(
    scores: np.ndarray, cols: np.ndarray, bpreg: float, elu: float, scale: float
) -> tuple[float, np.ndarray]:
    """(summed loss, ``scale`` · d loss / d unique scores) of BPR-max.

    ``scores`` are ``(n, u)`` scores of unique output rows and ``cols`` maps the ``m`` sampled
    columns to them (the target of row ``i`` is column ``i``): the loss and gradient of
    :func:`gru4rec_output.bpr_max_grad` on ``scores[:, cols]``, with the gradient summed per
    unique row (``index_add`` over ``cols``), as ``(n, u)``."""
    m = cols.shape[0]
    out = _empty(*scores.shape)
    out.fill(0.0)
    # Three row buffers at the same offset within a 4 KB page: with the first 64-byte
    # aligned and the others 8,512 bytes on (m = 2,128), the kernel took 1.7 ms instead of
    # 0.6 on the same scores (an address-aliasing stall between the loops' loads and
    # stores, measured; offsets of 0 or 512 bytes and more within the page ran fast)
    stride = -(-m // 1024) * 1024
    buf = _empty(3 * stride + 1024)
    start = (-buf.ctypes.data % 4096) // 4
    s, e, sig = (buf[start + k * stride : start + k * stride + m] for k in range(3))
    loss = _kernels().bpr_max_unique(
        scores, cols, float(bpreg), float(elu), float(scale), out, s, e, sig
    )
    return float(loss), out


def gru_forward(gi: np.ndarray, gh: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new state, gates) of a GRU cell from its gate pre-activations ``gi = x W_ihᵀ + b_ih``
    and ``gh = h W_hhᵀ + b_hh`` (``(n, 3H)``, gates r, z, n as torch orders them) and the
    state ``h``; the gates (r, z, n) are what :func:`gru_backward` needs."""
    out, gates = _empty(*h.shape), _empty(*gi.shape)
    _kernels().gru_forward(gi, gh, h, out, gates)
    return out, gates


def gru_backward(
    dh: np.ndarray, gates: np.ndarray, gh: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(d gi, d gh) from d h' and what :func:`gru_forward` left (``gates``, ``gh``, ``h``)."""
    dgi, dgh = _empty(*gates.shape), _empty(*gates.shape)
    _kernels().gru_backward(dh, gates, gh, h, dgi, dgh)
    return dgi, dgh


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of CPU float32 tensors through numpy's BLAS (OpenBLAS): on this 2-core AMD
    machine 10-15% faster than torch's MKL for the step's products (80 × 225 × 2,187: 690-720
    against 770-810 µs; MKL runs its AVX2 code on AMD). Strided views (``.T``, column
    slices) go to BLAS as they are. The caller bounds the BLAS threads (threadpoolctl)."""
    out = _empty(a.shape[0], b.shape[1])
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy(), out=out))
