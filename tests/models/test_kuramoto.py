"""Kuramoto networks against mean-field theory and exact identities."""

import math

import pytest
import torch

from lightning_dyn.dynamics import critical_coupling, lorentzian_order_parameter
from lightning_dyn.ensembles import (erdos_renyi, erdos_renyi_sparse, graphon_top_eigenvalue, natural_frequencies,
                                     sample_graphon, small_world)
from lightning_dyn.models import GraphCoupling, KuramotoNetwork, order_parameter, time_averaged_order_parameter


def _time_averaged_r(net, n, t_end, step):
    _, theta = net.simulate(torch.zeros(n, dtype=torch.float64), (0.0, t_end), step_size=step, num_saves=201)
    return float(time_averaged_order_parameter(theta, burn_in=0.5))


@pytest.mark.slow
def test_lorentzian_all_to_all_order_parameter_matches_theory():
    n = 4000
    omega = natural_frequencies(n, "lorentzian", 0.5)  # K_c = 2γ = 1
    kc = critical_coupling("lorentzian", 0.5)
    assert kc == pytest.approx(1.0)
    for K, expected in [(1.5, 0.57735), (2.0, 0.70711), (4.0, 0.86603)]:
        assert lorentzian_order_parameter(K, kc) == pytest.approx(expected, abs=1e-5)
        r = _time_averaged_r(KuramotoNetwork(omega, K), n, 200.0, 0.05)
        assert abs(r - expected) <= 0.01, (K, r)
    assert _time_averaged_r(KuramotoNetwork(omega, 0.5), n, 200.0, 0.05) < 0.05


@pytest.mark.slow
def test_erdos_renyi_order_parameter_matches_graphon_theory():
    n, p = 2000, 0.5
    omega = natural_frequencies(n, "lorentzian", 0.5)
    kc = critical_coupling("lorentzian", 0.5, erdos_renyi(p))
    assert kc == pytest.approx(2.0, rel=1e-9)
    net = KuramotoNetwork.on_graphon(omega, 3.0, erdos_renyi(p))
    r = _time_averaged_r(net, n, 60.0, 0.1)
    assert abs(r - 0.5774) <= 0.02, r


def test_all_to_all_path_equals_dense_and_sparse_paths():
    g = torch.Generator().manual_seed(0)
    n = 40
    omega = torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.rand(3, n, generator=g, dtype=torch.float64) * 2 * math.pi  # a batch of 3 systems
    ones = torch.ones(n, n, dtype=torch.float64)
    fast = KuramotoNetwork(omega, 1.7)(torch.tensor(0.0), theta)
    dense = KuramotoNetwork(omega, 1.7, ones)(torch.tensor(0.0), theta)
    # the naive double sum, written out
    naive = omega + 1.7 / n * torch.sin(theta[:, None, :] - theta[:, :, None]).sum(-1)
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-10)
    torch.testing.assert_close(dense, naive, rtol=0, atol=1e-10)
    A = sample_graphon(erdos_renyi(0.3), n, generator=g)
    on_graph = KuramotoNetwork(omega, 1.7, A)(torch.tensor(0.0), theta)
    naive_graph = omega + 1.7 / n * (A * torch.sin(theta[:, None, :] - theta[:, :, None])).sum(-1)
    torch.testing.assert_close(on_graph, naive_graph, rtol=0, atol=1e-10)
    sparse = KuramotoNetwork(omega, 1.7, A.to_sparse_csr())(torch.tensor(0.0), theta)
    torch.testing.assert_close(sparse, naive_graph, rtol=0, atol=1e-10)


def test_gradients_in_coupling_and_frequencies_pass_gradcheck():
    n = 6
    g = torch.Generator().manual_seed(1)
    theta0 = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    A = sample_graphon(erdos_renyi(0.6), n, generator=g)

    def final_r(K, omega):
        net = KuramotoNetwork(omega.detach(), 1.0, A)
        net.coupling, net.frequencies = K, omega  # differentiable inputs in place of the buffers
        _, theta = net.simulate(theta0, (0.0, 1.0), step_size=0.1, num_saves=2)
        return order_parameter(theta[-1])

    K = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    omega = torch.randn(n, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(final_r, (K, omega))
    learnable = KuramotoNetwork(omega.detach(), 1.3, learn_coupling=True, learn_frequencies=True)
    assert {n for n, _ in learnable.named_parameters()} == {"coupling", "frequencies"}


def test_critical_coupling_for_user_graphons():
    p = 0.3
    assert graphon_top_eigenvalue(erdos_renyi(p)) == pytest.approx(p, rel=1e-9)
    assert critical_coupling("lorentzian", 0.5, erdos_renyi(p)) == pytest.approx(2 * 0.5 / p, rel=1e-9)
    # rank one: W(x, y) = f(x) f(y), λ_max = ∫ f² = 1/3 for f(x) = x
    rank_one = lambda x, y: x * y  # noqa: E731
    assert graphon_top_eigenvalue(rank_one) == pytest.approx(1 / 3, rel=1e-6)
    assert critical_coupling("gaussian", 1.3) == pytest.approx(1.3 * math.sqrt(8 / math.pi), rel=1e-12)
    # the small-world graphon's top eigenfunction is constant: λ = 2r·p + (1 − 2r)·q
    assert graphon_top_eigenvalue(small_world(0.8, 0.1, 0.2)) == pytest.approx(0.4 * 0.8 + 0.6 * 0.1, rel=1e-3)


def test_frequencies_are_the_laws_quantiles():
    w = natural_frequencies(1001, "lorentzian", 0.5)
    assert float(w.median()) == pytest.approx(0.0, abs=1e-12)
    assert float((w.abs() < 0.5).double().mean()) == pytest.approx(0.5, abs=2e-3)  # P(|ω| < γ) = 1/2
    gauss = natural_frequencies(20000, "gaussian", 2.0)
    assert float(gauss.std()) == pytest.approx(2.0, rel=5e-3)
    drawn = natural_frequencies(100, "gaussian", 1.0, sampling="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, natural_frequencies(100, "gaussian", 1.0, sampling="random",
                                                  generator=torch.Generator().manual_seed(3)))


def test_graph_sampling():
    g = torch.Generator().manual_seed(0)
    A = sample_graphon(erdos_renyi(0.2), 1000, generator=g)
    assert torch.equal(A, A.T) and float(A.diagonal().abs().sum()) == 0
    assert float(A.sum() / (1000 * 999)) == pytest.approx(0.2, abs=0.005)
    W = sample_graphon(small_world(0.8, 0.1, 0.2), 10, sampling="deterministic")
    assert float(W[0, 1]) == 0.8 and float(W[0, 5]) == 0.1
    S = erdos_renyi_sparse(5000, 20.0, generator=g)
    degrees = S.to_dense().sum(1)
    assert float(degrees.mean()) == pytest.approx(20.0, rel=0.02)


def test_bad_input_names_the_argument():
    omega = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        KuramotoNetwork(omega, 1.0, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="5 nodes"):
        KuramotoNetwork(omega, 1.0, torch.zeros(6, 6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_graphon(lambda x, y: 2 * x + y, 10)
    with pytest.raises(ValueError, match="num_nodes"):
        natural_frequencies(1, "gaussian")
    with pytest.raises(ValueError, match="law"):
        natural_frequencies(10, "uniform")
    with pytest.raises(ValueError, match="num_nodes"):
        GraphCoupling(1)


def test_order_parameter_of_known_configurations():
    n = 100
    assert float(order_parameter(torch.zeros(n, dtype=torch.float64))) == pytest.approx(1.0)
    splay = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    assert float(order_parameter(splay)) == pytest.approx(0.0, abs=1e-12)
    two_clusters = torch.cat([torch.zeros(n // 2, dtype=torch.float64), torch.full((n // 2,), math.pi / 2, dtype=torch.float64)])
    assert float(order_parameter(two_clusters)) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    trajectory = torch.stack([splay, torch.zeros(n, dtype=torch.float64)])
    assert float(time_averaged_order_parameter(trajectory, burn_in=0.5)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="burn_in"):
        time_averaged_order_parameter(trajectory, burn_in=1.0)
