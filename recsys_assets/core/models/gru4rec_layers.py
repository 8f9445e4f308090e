"""GRU4Rec's GRU layers in a training step, forward and backward by hand (CPU kernels).

Through autograd a training step spent ~3.2 ms of 13 on the GRU layer (scale 1.0, official
RetailRocket parameters), most of it not in its five (80 × 224 × 672) products but in the ~25
small ops around them and their backward nodes. Here a layer is two products, one kernel for
the gates (:func:`row_kernels.gru_forward`) and, backward, one kernel for the gate gradients
and three products (numpy's BLAS, :func:`row_kernels.matmul`). The state carried in from the
previous step is detached (as in the original: one step of back-propagation through time),
so the backward pass needs no gradient for it.

The math is torch's ``GRUCell`` (gates r, z, n; ``h' = (h − n) z + n``) with the inverted
dropout of :func:`gru4rec._dropout` on the input and on each layer's output, drawing the
same random numbers in the same order, so the autograd path and this one train alike
(checked in tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_assets.core.models import row_kernels


def dropout_mask(x: torch.Tensor, p: float) -> torch.Tensor | None:
    """The scaled keep-mask :func:`gru4rec._dropout` multiplies by (None for ``p`` 0)."""
    if p <= 0:
        return None
    return (torch.rand_like(x) >= p) * (1.0 / (1.0 - p))


@dataclass
class _Saved:
    cell: nn.GRUCell
    x: torch.Tensor  # the layer's input (after dropout)
    h: torch.Tensor  # the state carried in
    gates: torch.Tensor  # r, z, n
    gh: torch.Tensor  # h W_hhᵀ + b_hh (its n block is needed backward)
    mask: torch.Tensor | None  # the output dropout


def forward(
    cells: nn.ModuleList,
    x: torch.Tensor,
    hidden: list[torch.Tensor],
    first: int,
    p_embed: float,
    p_hidden: float,
) -> tuple[torch.Tensor, torch.Tensor | None, list[_Saved]]:
    """(last layer's output, the input's dropout mask, what :func:`backward` needs); the new
    states (dropped out, as the original carries them) are written to ``hidden``."""
    with torch.no_grad():
        in_mask = dropout_mask(x, p_embed)
        inp = x if in_mask is None else x * in_mask
        tape = []
        for i, cell in enumerate(cells):
            j = first + i
            h = hidden[j]
            gi = row_kernels.matmul(inp, cell.weight_ih.detach().T).add_(cell.bias_ih)
            gh = row_kernels.matmul(h, cell.weight_hh.detach().T).add_(cell.bias_hh)
            out, gates = (
                torch.from_numpy(a)
                for a in row_kernels.gru_forward(gi.numpy(), gh.numpy(), h.numpy())
            )
            mask = dropout_mask(out, p_hidden)
            tape.append(_Saved(cell, inp, h, gates, gh, mask))
            inp = out if mask is None else out * mask
            hidden[j] = inp
    return inp, in_mask, tape


def backward(
    d_out: torch.Tensor, in_mask: torch.Tensor | None, tape: list[_Saved]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(d input, the gradients of every cell's weight_ih, weight_hh, bias_ih, bias_hh in
    ``net.parameters()`` order) from the gradient of the last layer's output."""
    grads: list[list[torch.Tensor]] = []
    d = d_out
    with torch.no_grad():
        for s in reversed(tape):
            if s.mask is not None:
                d = d * s.mask
            dgi, dgh = (
                torch.from_numpy(a)
                for a in row_kernels.gru_backward(
                    d.contiguous().numpy(), s.gates.numpy(), s.gh.numpy(), s.h.numpy()
                )
            )
            mm = row_kernels.matmul
            grads.append([mm(dgi.T, s.x), mm(dgh.T, s.h), dgi.sum(0), dgh.sum(0)])
            d = mm(dgi, s.cell.weight_ih.detach())
        if in_mask is not None:
            d = d * in_mask
    return d, [g for layer in reversed(grads) for g in layer]
