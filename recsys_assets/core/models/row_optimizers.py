"""Adagrad with momentum that updates only the touched rows of an item table.

The update rule of the official GRU4Rec (``IndexedAdagradM`` in hidasib/GRU4Rec_PyTorch_Official
and the Theano original): ``acc += g²``, ``mom = momentum · mom − lr · g / sqrt(acc + eps)``,
``p += mom``. For an item table only the rows in the minibatch (inputs, targets and sampled
negatives) are touched, accumulator and momentum included: an untouched row keeps its momentum
instead of having it decay, which is what the original does with its sparse gradients.

Here the caller gathers the minibatch's unique rows into a leaf tensor itself (so its gradient
arrives already summed per row, with no sparse-tensor coalescing) and hands rows and gradient to
:meth:`IndexedAdagradM.step_rows`.
"""

from __future__ import annotations

import torch


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
