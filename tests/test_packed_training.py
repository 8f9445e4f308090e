"""The hand-written training pieces of the torch models equal what they replaced: closed-form
BPR-max / cross-entropy gradients against autograd of the losses, packed-table optimizers
against the row optimizers, the numba kernels against the torch ops, the GRU4Rec trained-item
top-k against the dense top-k."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_assets.core.models import row_kernels
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


needs_numba = pytest.mark.skipif(not row_kernels.available(), reason="numba not importable")


@pytest.fixture
def torch_ops(monkeypatch):
    """Runs the code under test on the torch path (the kernels switched off)."""

    def switch(on: bool) -> None:
        monkeypatch.setattr(row_kernels, "ENABLED", not on)

    return switch


@needs_numba
@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_packed_adagrad_kernel_equals_torch(momentum, torch_ops):
    gen = torch.Generator().manual_seed(7)
    weight, bias = torch.randn(50, 9, generator=gen), torch.randn(50, generator=gen)
    tables = {}
    for torch_path in (True, False):
        torch_ops(torch_path)
        table = PackedTable([weight, bias])
        g = torch.Generator().manual_seed(8)
        for _ in range(4):
            rows = torch.randperm(50, generator=g)[:20]
            params, block = table.read(rows)
            torch.testing.assert_close(params, table.state[rows, 0], rtol=0, atol=0)
            assert (block is None) != torch_path
            table.adagrad_(rows, torch.randn(20, 10, generator=g), 0.05, momentum, block=block)
        tables[torch_path] = table.state
    assert not torch.equal(tables[True], PackedTable([weight, bias]).state)
    # params, accumulators and momenta alike, within a float32 rounding
    torch.testing.assert_close(tables[False], tables[True], rtol=2e-6, atol=1e-7)


@needs_numba
@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_dense_adagrad_kernel_equals_torch(momentum, torch_ops):
    gen = torch.Generator().manual_seed(9)
    start = torch.randn(6, 5, generator=gen)
    grads = [torch.randn(6, 5, generator=gen) for _ in range(3)]
    result = {}
    for torch_path in (True, False):
        torch_ops(torch_path)
        p, opt = torch.nn.Parameter(start.clone()), IndexedAdagradM(0.05, momentum)
        for g in grads:
            opt.step_dense(p, g)
        result[torch_path] = p.detach()
    assert not torch.allclose(result[True], start)
    torch.testing.assert_close(result[False], result[True], rtol=2e-6, atol=1e-7)


@needs_numba
@pytest.mark.parametrize("elu", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("bpreg", [0.0, 1.95])
def test_bpr_max_kernel_equals_the_torch_gradient(elu, bpreg):
    gen = torch.Generator().manual_seed(10)
    n, u = 12, 40
    unique = torch.randn(n, u, generator=gen) * 4  # wide scores: ELU and softmax both bend
    # in-batch targets (one a repeat) and negatives with repeats, as GRU4Rec samples them
    cols = torch.cat(
        [torch.arange(n - 1), torch.tensor([3]), torch.randint(0, u, (60,), generator=gen)]
    )
    loss, d_unique = row_kernels.bpr_max_unique(unique.numpy(), cols.numpy(), bpreg, elu, 0.1)
    # within the float32 torch ops' own error (up to ~1.3e-6 of the largest entry here) of
    # them and of the float64 evaluation
    for dtype, tol in ((torch.float32, 3e-6), (torch.float64, 1.5e-6)):
        ref_loss, ref = bpr_max_grad(unique.to(dtype)[:, cols], bpreg, elu, 0.1)
        expected = torch.zeros(n, u, dtype=dtype).index_add_(1, cols, ref)
        assert loss == pytest.approx(float(ref_loss), rel=1e-6)
        torch.testing.assert_close(
            torch.from_numpy(d_unique).to(dtype), expected, rtol=0, atol=tol * expected.abs().max()
        )


def test_column_subset_helpers():
    m = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    subset = np.array([0, 2, 3])
    sub = restrict_columns(m, column_positions(subset, 4))
    assert sub.shape == (3, 3)
    np.testing.assert_array_equal(sub.toarray(), m.toarray()[:, subset])
    cols = np.array([[2, 0, -1]])
    np.testing.assert_array_equal(map_columns(cols, subset, 5), [[3, 0, -1, -1, -1]])
