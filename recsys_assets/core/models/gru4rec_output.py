"""GRU4Rec's output side written out by hand: sampled scores, loss gradients, packed row updates.

A training step scores ``n`` session states against ``m`` sampled outputs (the ``n`` in-batch
targets plus ``n_sample`` shared negatives; 80 × 2,128 with the RetailRocket parameters) and
updates only the item rows it touched. Through autograd that step was dominated not by
arithmetic but by moving rows of the big item tables: a unique-rows leaf for ``Wy`` and
another for ``By``, gathered again per output, a zero-filled scatter for each leaf's
gradient, then separate gathers and scatters of the Adagrad accumulator and momentum (about
half of a 13 ms step at scale 1.0, 417k items). Here:

- ``Wy``, ``By``, their accumulators and their momenta live in one packed table
  (:class:`packed_tables.PackedTable`, one ``(3, H + 1)`` block per item), so a step reads the
  touched rows with one gather and writes them back with one scatter (on the CPU, a numba
  kernel updates them in place instead, :mod:`row_kernels`);
- the bias is column ``H`` of the weights, so scores are one product ``[h, 1] · rowsᵀ``;
- scores are computed once per *unique* row and spread to the sampled columns (popular items
  repeat among the samples), and the gradient is summed back per unique row the same way;
- the BPR-max and cross-entropy gradients are closed forms (:func:`bpr_max_grad`,
  :func:`cross_entropy_grad`), checked against autograd of the losses in tests (the CPU
  kernel ``row_kernels.bpr_max_unique`` against :func:`bpr_max_grad`).

The math is that of the autograd version (same losses, same IndexedAdagradM rule, the input
rows of the constrained embedding summed into the same row update); only the data movement
changed.
"""

from __future__ import annotations

import torch


def _elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """ELU as the original Theano code writes it, ``α (exp(x) − 1)`` below 0: for ``α <= 1``
    that is ``max(x, α (exp(min(x, 0)) − 1))`` (at most ``x`` above 0, at least ``x`` below),
    four light passes and one ``exp``; torch's ELU calls ``expm1``, which alone took 240 µs
    of the 80 × 2,128 score block against 47 for ``exp``."""
    if alpha > 1:
        return torch.nn.functional.elu(x, alpha)
    neg = torch.clamp(x, max=0.0).exp_().sub_(1.0).mul_(alpha)
    return torch.maximum(x, neg, out=neg)


def bpr_max_grad(
    scores: torch.Tensor, bpreg: float, elu_param: float, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, ``scale`` · d loss / d scores) of :func:`gru4rec.bpr_max_loss`, in
    closed form.

    With ``s`` the (ELU'd) scores of a row, ``t`` its target column, ``w`` the softmax over
    the other columns, ``σ_j = sigmoid(s_t − s_j)``, ``A = Σ σ_j w_j`` and
    ``R = Σ s_j² w_j``, the row's loss is ``−log(A + 1e-24) + λ R`` and, for ``j ≠ t``::

        dL/ds_j = w_j ((A − σ_j²) / (A + 1e-24) + λ (s_j (s_j + 2) − R))
                = c w_j + λ (w_j s_j) s_j + 2λ (w_j s_j) − (σ_j² w_j) / (A + 1e-24)
        dL/ds_t = −Σ_j σ_j (1 − σ_j) w_j / (A + 1e-24) = −(A − Σ_j σ_j² w_j) / (A + 1e-24)

    with the per-row ``c = A / (A + 1e-24) − λ R``. The second form reuses the products the
    sums need (``w s``, ``σ² w``) and adds them with ``addcmul_``: about twenty passes over
    the (n × m) block, each a single fused torch op (26 before: 1.7 ms of a 13 ms GRU4Rec step
    at 80 × 2,128). ``scale`` (the step's 1 / batch size) is folded into the coefficients.
    """
    s = _elu(scores, elu_param) if elu_param > 0 else scores
    target = s.diagonal().unsqueeze(1)
    w = s.clone()
    w.diagonal().fill_(-torch.inf)
    w = torch.softmax(w, dim=1)  # the target column is exactly 0
    sig = torch.sub(target, s).sigmoid_()
    sig2w = sig * w
    a = sig2w.sum(1, keepdim=True)  # Σ σ w
    sig2w.mul_(sig)  # σ² w
    ws = w * s
    r = (ws * s).sum(1, keepdim=True)  # Σ s² w
    denom = a + 1e-24
    loss = (-torch.log(denom) + bpreg * r).sum()
    grad = w.mul_((a / denom - bpreg * r).mul_(scale))
    if bpreg > 0:
        grad.addcmul_(ws, s, value=bpreg * scale).add_(ws, alpha=2.0 * bpreg * scale)
    grad.addcmul_(sig2w, denom.reciprocal().mul_(-scale))
    diag = (a - sig2w.sum(1, keepdim=True)).div_(denom).mul_(scale)
    grad.diagonal().sub_(diag.squeeze(1))
    if elu_param > 0:
        # from the ELU's result (s + α below 0): no exp, 80 against 140 µs at 80 × 2,128
        grad = torch.ops.aten.elu_backward(grad, elu_param, 1, 1, True, s)
    return loss, grad


def cross_entropy_grad(
    scores: torch.Tensor,
    targets: torch.Tensor,
    logq: float,
    pop: torch.Tensor | None,
    sample_alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, d loss / d scores) of :func:`gru4rec.cross_entropy_loss`:
    ``softmax(s) − onehot(target)`` with the logQ-corrected scores ``s``."""
    n = scores.shape[0]
    if logq > 0 and pop is not None:
        q = torch.cat([pop[targets[:n]], pop[targets[n:]] ** sample_alpha])
        scores = scores - logq * torch.log(q)
    logp = torch.log_softmax(scores, dim=1)
    loss = -logp.diagonal().sum()
    grad = logp.exp_()
    grad.diagonal().sub_(1.0)
    return loss, grad
