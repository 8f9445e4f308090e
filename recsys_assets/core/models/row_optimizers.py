"""Optimizers that update only the touched rows of an embedding table, and the gather that
feeds them.

Both torch models keep their user/item tables out of autograd: a minibatch gathers its unique
rows into a small leaf tensor (:func:`gather_rows`), whose gradient arrives already summed per
row, and the optimizer updates exactly those rows. That avoids sparse-gradient coalescing
(torch's ``SparseAdam`` spent three quarters of an NCF epoch there) and dense updates of whole
tables.

``IndexedAdagradM`` is Adagrad with momentum as in the official GRU4Rec.

The update rule of the official GRU4Rec (``IndexedAdagradM`` in hidasib/GRU4Rec_PyTorch_Official
and the Theano original): ``acc += g²``, ``mom = momentum · mom − lr · g / sqrt(acc + eps)``,
``p += mom``. For an item table only the rows in the minibatch (inputs, targets and sampled
negatives) are touched, accumulator and momentum included: an untouched row keeps its momentum
instead of having it decay, which is what the original does with its sparse gradients.

``LazyAdam`` is Adam whose moments of a row advance only when the row is in the batch (what
``torch.optim.SparseAdam`` does), with bias correction by the global step count.
"""

from __future__ import annotations

import torch

from recsys_assets.core.models import row_kernels


def gather_rows(table: torch.Tensor, idx: torch.Tensor, leaves: list) -> torch.Tensor:
    """``table[idx]`` through a leaf holding the unique rows; (table, rows, leaf) is appended
    to ``leaves`` so the caller can hand each leaf's gradient to ``step_rows``."""
    rows, inv = torch.unique(idx, return_inverse=True)
    leaf = table.detach().index_select(0, rows).requires_grad_()
    leaves.append((table, rows, leaf))
    return leaf.index_select(0, inv)


class IndexedAdagradM:
    def __init__(self, lr: float, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if not lr > 0:
            raise ValueError(f"learning_rate must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr, self.momentum, self.eps = float(lr), float(momentum), float(eps)
        self._acc: dict[int, torch.Tensor] = {}
        self._mom: dict[int, torch.Tensor] = {}

    def _state(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = id(p)
        if key not in self._acc:
            self._acc[key] = torch.zeros_like(p)
            if self.momentum > 0:
                self._mom[key] = torch.zeros_like(p)
        return self._acc[key], self._mom.get(key)

    @torch.no_grad()
    def step_dense(self, p: torch.Tensor, grad: torch.Tensor) -> None:
        acc, mom = self._state(p)
        if row_kernels.usable(p, grad):
            # one pass instead of eight (GRU4Rec's GRU weights: 1.2 ms of a step in torch)
            flat = [t.detach().numpy().reshape(-1) for t in (p, acc, acc if mom is None else mom)]
            g = grad.detach().numpy().reshape(-1)
            row_kernels.adagrad_flat(*flat, g, self.lr, self.momentum, self.eps)
            return
        acc.add_(grad * grad)
        denom = (acc + self.eps).sqrt_()
        if mom is not None:
            mom.mul_(self.momentum).addcdiv_(grad, denom, value=-self.lr)
            p.add_(mom)
        else:
            p.addcdiv_(grad, denom, value=-self.lr)

    @torch.no_grad()
    def step_rows(self, table: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Update ``table[rows]`` (``rows`` unique) with the per-row summed ``grad``."""
        acc, mom = self._state(table)
        acc_rows = acc.index_select(0, rows).add_(grad * grad)
        acc.index_copy_(0, rows, acc_rows)
        step = grad / acc_rows.add_(self.eps).sqrt_()
        if mom is not None:
            mom_rows = mom.index_select(0, rows).mul_(self.momentum).add_(step, alpha=-self.lr)
            mom.index_copy_(0, rows, mom_rows)
            table.index_add_(0, rows, mom_rows)
        else:
            table.index_add_(0, rows, step, alpha=-self.lr)


class LazyAdam:
    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if not lr > 0:
            raise ValueError(f"learning_rate must be > 0, got {lr}")
        self.lr, (self.b1, self.b2), self.eps = float(lr), betas, float(eps)
        self.steps = 0
        self._m: dict[int, torch.Tensor] = {}
        self._v: dict[int, torch.Tensor] = {}

    def tick(self) -> None:
        """Advance the global step (once per minibatch, before the row updates)."""
        self.steps += 1

    def _state(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(p)
        if key not in self._m:
            self._m[key] = torch.zeros_like(p)
            self._v[key] = torch.zeros_like(p)
        return self._m[key], self._v[key]

    @torch.no_grad()
    def step_rows(self, table: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> None:
        m, v = self._state(table)
        m_rows = m.index_select(0, rows).mul_(self.b1).add_(grad, alpha=1 - self.b1)
        v_rows = v.index_select(0, rows).mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        m.index_copy_(0, rows, m_rows)
        v.index_copy_(0, rows, v_rows)
        t = max(self.steps, 1)
        step_size = self.lr * (1 - self.b2**t) ** 0.5 / (1 - self.b1**t)
        denom = v_rows.sqrt_().add_(self.eps * (1 - self.b2**t) ** 0.5)
        table.index_add_(0, rows, m_rows.div_(denom), alpha=-step_size)
