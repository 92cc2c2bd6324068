"""DDP: two gloo processes, each holding part of the probe data, see the Hessian of the whole."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_dyn.curvature import CurvatureOperator, HessianOperator, spectral_density, top_eigenpairs, trace
from lightning_dyn.curvature.space import ShardedSpace
from tests.helpers import mlp, mse_loss, regression_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = mlp(sizes=(6, 8, 3))
        x, y = regression_data(n=30)
        # unequal shards (12 and 18 samples), the second split into two batches
        mine = [(x[:12], y[:12])] if rank == 0 else [(x[12:20], y[12:20]), (x[20:], y[20:])]
        op = HessianOperator(model, mse_loss, mine)
        assert op.distributed and op.total_weight == 30
        v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        hv = op @ v
        eig = top_eigenpairs(op, k=2, tol=1e-8, max_matvecs=60)
        fd = HessianOperator(model, mse_loss, mine, backend="finite_difference")
        hv_fd = fd @ v
        torch.save({"hv": hv, "values": eig.values, "num_matvecs": eig.num_matvecs, "hv_fd": hv_fd,
                    "fd_error": fd.relative_error}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_product_equals_single_process_on_all_data(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    model = mlp(sizes=(6, 8, 3))
    x, y = regression_data(n=30)
    op = HessianOperator(model, mse_loss, [(x, y)], distributed=False)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = op @ v
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:
        rel = torch.linalg.vector_norm(r["hv"] - expected) / torch.linalg.vector_norm(expected)
        assert rel <= 1e-6
    # central differences: the same all-reduced product and error estimate on both ranks
    assert torch.equal(ranks[0]["hv_fd"], ranks[1]["hv_fd"]) and ranks[0]["fd_error"] == ranks[1]["fd_error"]
    rel = torch.linalg.vector_norm(ranks[0]["hv_fd"] - expected) / torch.linalg.vector_norm(expected)
    assert rel <= 1e-6  # float64 differences
    # the solver takes identical decisions on every rank
    assert torch.equal(ranks[0]["values"], ranks[1]["values"])
    assert ranks[0]["num_matvecs"] == ranks[1]["num_matvecs"]
    ref = top_eigenpairs(op, k=2, tol=1e-8, max_matvecs=60).values
    torch.testing.assert_close(ranks[0]["values"], ref, rtol=1e-6, atol=0)


class _ShardedDense(CurvatureOperator):
    """A dense symmetric matrix whose vectors are split over the ranks (rows ``[lo, hi)`` here)."""

    def __init__(self, matrix: torch.Tensor, lo: int, hi: int) -> None:
        super().__init__()
        self.matrix, self.lo, self.hi = matrix, lo, hi
        self.size, self.device, self.dtype = hi - lo, matrix.device, matrix.dtype
        self.space = ShardedSpace()
        self.sizes = [None, None]
        dist.all_gather_object(self.sizes, self.size)

    @property
    def dimension(self) -> int:
        return sum(self.sizes)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        width = max(self.sizes)  # gloo gathers equal sizes: pad, then trim
        parts = [torch.zeros(width, dtype=v.dtype) for _ in self.sizes]
        dist.all_gather(parts, torch.cat([v, v.new_zeros(width - len(v))]))
        whole = torch.cat([part[:n] for part, n in zip(parts, self.sizes)])
        return (self.matrix @ whole)[self.lo:self.hi]


def _spectrum_matrix() -> torch.Tensor:
    """Symmetric, 40 × 40, eigenvalues 10/(1 + i) (decaying, like a trained network's Hessian)."""
    q, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    return q @ torch.diag(10.0 / (1 + torch.arange(40, dtype=torch.float64))) @ q.T


def _sharded_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        lo, hi = (0, 17) if rank == 0 else (17, 40)  # uneven shards
        op = _ShardedDense(_spectrum_matrix(), lo, hi)
        cold = top_eigenpairs(op, k=2, tol=1e-10, max_matvecs=40, generator=torch.Generator().manual_seed(1))
        warm = top_eigenpairs(op, k=2, tol=1e-10, max_matvecs=40, init=cold)
        full = trace(op, 120, generator=torch.Generator().manual_seed(2))  # a 40-wide sketch: exact
        sketch = trace(op, 30, generator=torch.Generator().manual_seed(2))
        density = spectral_density(op, num_runs=2, lanczos_steps=40, generator=torch.Generator().manual_seed(3))
        torch.save({"cold": cold.values, "warm": warm.values, "cold_n": cold.num_matvecs, "trace": full.value,
                    "sketch": (sketch.value, sketch.stderr), "nodes": density.nodes,
                    "vector": cold.vectors[:, 0]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_solvers_on_vectors_sharded_over_ranks_match_the_whole_matrix(tmp_path):
    mp.spawn(_sharded_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    exact = torch.linalg.eigvalsh(_spectrum_matrix()).flip(0)
    for r in ranks:
        assert r["cold"] == pytest.approx(exact[:2].tolist(), rel=1e-9)
        assert r["warm"] == pytest.approx(exact[:2].tolist(), rel=1e-9)
        assert r["trace"] == pytest.approx(float(exact.sum()), rel=1e-9)
        # SLQ with as many steps as the dimension: its nodes are the eigenvalues
        assert sorted(r["nodes"][0].tolist()) == pytest.approx(exact.flip(0).tolist(), rel=1e-6, abs=1e-9)
    # every scalar from an all-reduce: the same decisions and numbers on both ranks
    assert ranks[0]["cold_n"] == ranks[1]["cold_n"] and ranks[0]["sketch"] == ranks[1]["sketch"]
    assert torch.equal(ranks[0]["cold"], ranks[1]["cold"])
    # the two halves of the Ritz vector are a unit eigenvector of the whole matrix
    v = torch.cat([ranks[0]["vector"], ranks[1]["vector"]])
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(_spectrum_matrix() @ v, exact[0] * v, atol=1e-8)
    # random vectors are independent across ranks (a repeated pattern would bias Hutchinson)
    assert abs(ranks[0]["sketch"][0] - float(exact.sum())) <= 4 * ranks[0]["sketch"][1] + 1e-9
