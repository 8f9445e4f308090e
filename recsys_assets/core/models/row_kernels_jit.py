"""The numba kernels behind :mod:`row_kernels` (imported on first use: numba takes ~0.2 s to
import and only a CPU training step needs it). See :mod:`row_kernels` for what each computes.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def _pow2(typingctx, n):
    """``2.0 ** n`` as float32 for an int32 ``n`` in [-126, 127]: the exponent bits
    written directly (a bit cast, which LLVM vectorises; ``ldexp`` it would not)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return sig, codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_MAX = np.float32(88.3762626647949)
_EXP_MIN = np.float32(-87.33654475)


@numba.njit(inline="always", error_model="numpy")
def _exp(x):
    """float32 ``exp`` (Cephes ``expf``: range reduction by ln 2, degree-6 polynomial),
    branch-free so loops calling it vectorise; libm's ``expf`` does not (no vector math
    library without SVML). Clamped to the float32 range: ``exp(-87.3) ~ 1.2e-38`` is the
    smallest result (not 0), which only matters as a weight next to real ones."""
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - n * _LN2_HI - n * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _pow2(np.int32(n))


@numba.njit(inline="always", error_model="numpy")
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + _exp(-x))


@numba.njit(inline="always", error_model="numpy")
def _tanh(x):
    # 1 − 2 / (exp(2x) + 1): exact at ±inf, an absolute error of ~1e-7 near 0 (a float32
    # rounding of the O(1) states it enters)
    return np.float32(1.0) - np.float32(2.0) / (_exp(np.float32(2.0) * x) + np.float32(1.0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def gru_forward(gi, gh, h, out, gates):
    # torch's GRUCell on the gate pre-activations gi = x W_ihᵀ + b_ih, gh = h W_hhᵀ + b_hh
    # (gates r, z, n): r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r gh_n),
    # h' = (h − n) z + n, as ATen writes it; r, z, n go to ``gates`` for the backward pass
    # (each gate block its own slice: indexed as a[size + k] in one row, the loop ran
    # 13x slower, 320 against 25 µs at 80 × 224)
    size = h.shape[1]
    for i in range(h.shape[0]):
        a, b, hi, o, g = gi[i], gh[i], h[i], out[i], gates[i]
        ar, az, an = a[:size], a[size : 2 * size], a[2 * size :]
        br, bz, bn = b[:size], b[size : 2 * size], b[2 * size :]
        gr, gz, gn = g[:size], g[size : 2 * size], g[2 * size :]
        for k in range(size):
            r = _sigmoid(ar[k] + br[k])
            z = _sigmoid(az[k] + bz[k])
            c = _tanh(an[k] + r * bn[k])
            gr[k] = r
            gz[k] = z
            gn[k] = c
            o[k] = (hi[k] - c) * z + c


@numba.njit(cache=True, nogil=True, error_model="numpy")
def gru_backward(dh, gi, gh, h, dgi, dgh):
    # gradients of the gate pre-activations from d h' (gi holds r, z, n; gh_n = W_hn h + b_hn)
    size = h.shape[1]
    one = np.float32(1.0)
    for i in range(h.shape[0]):
        a, b, hi, d, da, db = gi[i], gh[i], h[i], dh[i], dgi[i], dgh[i]
        for k in range(size):
            r, z, c = a[k], a[size + k], a[2 * size + k]
            dc = d[k] * (one - z) * (one - c * c)
            dz = d[k] * (hi[k] - c) * z * (one - z)
            dr = dc * b[2 * size + k] * r * (one - r)
            da[k], da[size + k], da[2 * size + k] = dr, dz, dc
            db[k], db[size + k], db[2 * size + k] = dr, dz, dc * r


@intrinsic
def _prefetch(typingctx, arr, offset):
    """Ask for the cache line of element ``offset`` of the flat (contiguous) array ``arr``
    (``llvm.prefetch``: read, keep in all cache levels)."""
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(fn, [ptr, *flags])
        return context.get_dummy_value()

    return sig, codegen


# The rows of a step are scattered over a table far larger than the caches: every row is
# a run of misses. Asking for the lines of the row _AHEAD places on while working on the
# current one overlaps them (measured on a 417k-row table: the parameter gather 240 -> 170
# us, the update 650 -> 470 us for 2,187 rows; 2, 8 or 16 rows ahead were no better)
_AHEAD = 4


@numba.njit(cache=True, nogil=True, error_model="numpy")
def gather_slot(state, rows, slot, out):
    flat, block, width = state.reshape(-1), state.shape[1] * state.shape[2], state.shape[2]
    for k in range(rows.shape[0]):
        if k + _AHEAD < rows.shape[0]:
            base = rows[k + _AHEAD] * block + slot * width
            for off in range(0, width, 16):  # 16 floats: one 64-byte line
                _prefetch(flat, base + off)
        src = state[rows[k], slot]
        dst = out[k]
        for j in range(dst.shape[0]):
            dst[j] = src[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adagrad_rows(state, rows, grad, lr, momentum, eps):
    lr32, mu32, eps32 = np.float32(lr), np.float32(momentum), np.float32(eps)
    flat, block = state.reshape(-1), state.shape[1] * state.shape[2]
    for k in range(rows.shape[0]):
        if k + _AHEAD < rows.shape[0]:
            base = rows[k + _AHEAD] * block
            for off in range(0, block, 16):
                _prefetch(flat, base + off)
        r = rows[k]
        _adagrad(state[r, 0], state[r, 1], state[r, 2], grad[k], lr32, mu32, eps32, momentum)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adagrad_flat(p, acc, mom, g, lr, momentum, eps):
    lr32, mu32, eps32 = np.float32(lr), np.float32(momentum), np.float32(eps)
    _adagrad(p, acc, mom, g, lr32, mu32, eps32, momentum)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _adagrad(p, acc, mom, g, lr32, mu32, eps32, momentum):
    """One Adagrad(+momentum) update of ``p`` in place (shared by the row and flat kernels;
    inlined, so the row loop keeps its vectorised inner loop)."""
    if momentum > 0:
        for j in range(g.shape[0]):
            a = acc[j] + g[j] * g[j]
            acc[j] = a
            m = mom[j] * mu32 - lr32 * (g[j] / np.sqrt(a + eps32))
            mom[j] = m
            p[j] = p[j] + m
    else:
        for j in range(g.shape[0]):
            a = acc[j] + g[j] * g[j]
            acc[j] = a
            p[j] = p[j] - lr32 * (g[j] / np.sqrt(a + eps32))


_BLOCK = 32
_KW = {"cache": True, "nogil": True, "error_model": "numpy"}
# reassociation lets LLVM vectorise the sums and the maximum (partial results per lane)
_FAST = {"reassoc", "nsz"}


# BPR-max, one pass per function: written as one function, changes as small as dropping
# the ELU made LLVM vectorise its loops or not (0.6 against 1.8 ms on the same scores)
@numba.njit(**_KW)
def _sampled(row, cols, s, elu):
    """The ELU'd scores of the sampled columns into ``s``."""
    for j in range(cols.shape[0]):
        s[j] = row[cols[j]]
    if elu > 0:
        alpha = np.float32(elu)
        for j in range(s.shape[0]):
            x = s[j]
            s[j] = x if x > 0 else alpha * (_exp(x) - np.float32(1.0))


@numba.njit(**_KW, fastmath=_FAST)
def _max_except(s, i):
    mx = np.float32(-np.inf)
    for j in range(s.shape[0]):
        mx = max(mx, s[j] if j != i else np.float32(-np.inf))
    return mx


@numba.njit(**_KW, fastmath=_FAST)
def _softmax_sums(s, i, mx, e, sig):
    """``e = exp(s − mx)`` (0 at the target ``i``), ``sig = sigmoid(s_i − s)``, and the sums
    (Σ e, Σ σ e, Σ σ (1 − σ) e, Σ s² e). In float32 over blocks of 32 columns, added up in
    float64: R = Σ s² e / Σ e enters the gradient as λ (s_j (s_j + 2) − R), two large terms
    that cancel for the top scores (plain float32 sums made errors of 1e-5 there)."""
    one = np.float32(1.0)
    t = s[i]
    m = s.shape[0]
    z = 0.0
    a = 0.0
    b = 0.0
    r = 0.0
    for start in range(0, m, _BLOCK):
        z32 = np.float32(0.0)
        a32 = np.float32(0.0)
        b32 = np.float32(0.0)
        r32 = np.float32(0.0)
        for j in range(start, min(start + _BLOCK, m)):
            ej = _exp(s[j] - mx) if j != i else np.float32(0.0)
            q = _exp(s[j] - t)
            sj = one / (one + q)
            e[j] = ej
            sig[j] = sj
            z32 += ej
            a32 += sj * ej
            # σ (1 − σ) = σ² exp(s_j − t): the target's gradient without the cancellation
            # of Σ σ w − Σ σ² w when σ is near 1
            b32 += sj * sj * q * ej
            r32 += s[j] * s[j] * ej
        z += z32
        a += a32
        b += b32
        r += r32
    return z, a, b, r


@numba.njit(**_KW)
def _row_grad(s, e, sig, k, inv_d, inv_z, lam, c, elu):
    """d loss / d s_j into ``e`` (the target's entry is set by the caller)."""
    for j in range(s.shape[0]):
        w = e[j] * inv_z
        g = w * (k + lam * s[j] * (s[j] + np.float32(2.0)) - sig[j] * sig[j] * inv_d)
        e[j] = g * c
    if elu > 0:  # the ELU's derivative from its result: 1 above 0, s + α below
        alpha = np.float32(elu)
        for j in range(s.shape[0]):
            e[j] = e[j] if s[j] > 0 else e[j] * (s[j] + alpha)


@numba.njit(**_KW)
def _scatter_add(d, cols, g):
    for j in range(cols.shape[0]):  # summed per unique row (not vectorised)
        d[cols[j]] += g[j]


@numba.njit(**_KW)
def bpr_max_unique(scores, cols, bpreg, elu, scale, out, s, e, sig):
    lam, c = np.float32(bpreg), np.float32(scale)
    loss = 0.0
    for i in range(scores.shape[0]):
        _sampled(scores[i], cols, s, elu)
        mx = _max_except(s, i)  # softmax over the negatives: the target's weight is 0
        z, a, b, r = _softmax_sums(s, i, mx, e, sig)
        a /= z
        b /= z
        r /= z
        denom = a + 1e-24
        loss += -np.log(denom) + bpreg * r
        # dL/ds_j = w_j ((A − σ_j²) / (A + 1e-24) + λ (s_j (s_j + 2) − R)), j ≠ t
        k = np.float32(a / denom - bpreg * r)
        _row_grad(s, e, sig, k, np.float32(1.0 / denom), np.float32(1.0 / z), lam, c, elu)
        e[i] = np.float32(-b / denom) * c
        if elu > 0 and s[i] <= 0:
            e[i] *= s[i] + np.float32(elu)
        _scatter_add(out[i], cols, e)
    return loss
