"""DDP: two gloo processes, each holding part of the probe data, see the Hessian of the whole."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_dyn.curvature import HessianOperator, top_eigenpairs
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
