"""The hand-written training pieces of the torch models equal what they replaced: closed-form
BPR-max / cross-entropy gradients against autograd of the losses, packed-table optimizers
against the row optimizers, the GRU4Rec trained-item top-k against the dense top-k."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_assets.core.models.gru4rec import bpr_max_loss, cross_entropy_loss
from recsys_assets.core.models.gru4rec_output import bpr_max_grad, cross_entropy_grad
from recsys_assets.core.models.packed_tables import PackedTable, adagrad_momentum_, lazy_adam_
from recsys_assets.core.models.row_optimizers import IndexedAdagradM, LazyAdam
from recsys_assets.core.models.topk import column_positions, map_columns, restrict_columns


@pytest.mark.parametrize("elu", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("bpreg", [0.0, 1.95])
def test_bpr_max_grad_equals_autograd(elu, bpreg):
    gen = torch.Generator().manual_seed(3)
    scores = (torch.randn(6, 15, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    loss = bpr_max_loss(scores, bpreg, elu)
    (expected,) = torch.autograd.grad(loss, scores)
    got_loss, got = bpr_max_grad(scores.detach(), bpreg, elu)
    assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("logq", [0.0, 1.0])
def test_cross_entropy_grad_equals_autograd(logq):
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(5, 12, generator=gen, dtype=torch.float64).requires_grad_()
    targets = torch.randint(0, 9, (12,), generator=gen)
    pop = torch.rand(9, generator=gen, dtype=torch.float64) + 0.5
    loss = cross_entropy_loss(scores, targets, logq, pop, 0.5)
    (expected,) = torch.autograd.grad(loss, scores)
    got_loss, got = cross_entropy_grad(scores.detach(), targets, logq, pop, 0.5)
    assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def _two_tables(gen):
    return torch.randn(7, 3, generator=gen), torch.randn(7, generator=gen)


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_packed_adagrad_equals_indexed_adagrad(momentum):
    gen = torch.Generator().manual_seed(5)
    weight, bias = _two_tables(gen)
    ref_w, ref_b = weight.clone(), bias.clone()
    opt = IndexedAdagradM(0.05, momentum)
    table = PackedTable([weight, bias])
    for rows in (torch.tensor([1, 4]), torch.tensor([0, 1, 6]), torch.tensor([4])):
        g = torch.randn(rows.numel(), 4, generator=gen)
        opt.step_rows(ref_w, rows, g[:, :3].contiguous())
        opt.step_rows(ref_b, rows, g[:, 3].contiguous())
        block = table.gather(rows)
        adagrad_momentum_(block, g, 0.05, momentum)
        table.write(rows, block)
    torch.testing.assert_close(table.part(0), ref_w)
    torch.testing.assert_close(table.part(1), ref_b)
    assert table.part(1).shape == (7,)


def test_packed_lazy_adam_equals_lazy_adam():
    gen = torch.Generator().manual_seed(6)
    a, b = torch.randn(9, 4, generator=gen), torch.randn(9, 2, generator=gen)
    ref_a, ref_b = a.clone(), b.clone()
    opt = LazyAdam(0.01)
    table = PackedTable([a, b])
    for step, rows in enumerate((torch.tensor([2, 3]), torch.tensor([3, 8]), torch.tensor([0])), 1):
        g = torch.randn(rows.numel(), 6, generator=gen)
        opt.tick()
        opt.step_rows(ref_a, rows, g[:, :4].contiguous())
        opt.step_rows(ref_b, rows, g[:, 4:].contiguous())
        block = table.gather(rows)
        lazy_adam_(block, g, 0.01, step)
        table.write(rows, block)
    torch.testing.assert_close(table.part(0), ref_a)
    torch.testing.assert_close(table.part(1), ref_b)


def test_column_subset_helpers():
    m = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    subset = np.array([0, 2, 3])
    sub = restrict_columns(m, column_positions(subset, 4))
    assert sub.shape == (3, 3)
    np.testing.assert_array_equal(sub.toarray(), m.toarray()[:, subset])
    cols = np.array([[2, 0, -1]])
    np.testing.assert_array_equal(map_columns(cols, subset, 5), [[3, 0, -1, -1, -1]])
