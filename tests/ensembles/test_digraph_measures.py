"""Digraph measures: the kernel operator's top eigenvalue against closed forms, and finite samples
with the normalisation their limit needs."""

import math

import pytest
import torch

from lightning_dyn.ensembles import DigraphMeasure, erdos_renyi, graphon_top_eigenvalue, sample_graphon
from lightning_dyn.models import FiringRateNetwork, GraphCoupling, KuramotoNetwork


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.25, 0.4, 0.45])
def test_power_law_top_eigenvalue_is_one_over_one_minus_two_alpha(alpha):
    # the graded mesh keeps the midpoint rule O(n^-2) although x^{-2α} is barely integrable at α = 0.45
    mu = DigraphMeasure.power_law(alpha).top_eigenvalue(1000)
    assert mu == pytest.approx(1 / (1 - 2 * alpha), rel=1e-6)


def test_an_ungraded_mesh_misses_the_singular_kernel():
    """The grading is what makes the power law right: the plain midpoint rule is off by per cents."""
    graded = DigraphMeasure.power_law(0.4).top_eigenvalue(1000)
    plain = DigraphMeasure.power_law(0.4).top_eigenvalue(1000, grading=1.0)
    assert abs(plain / 5 - 1) > 0.02 > abs(graded / 5 - 1)


def test_closed_forms_uniform_rank_one_directed_and_sums():
    assert DigraphMeasure.uniform().top_eigenvalue(200) == pytest.approx(1.0, rel=1e-12)
    assert DigraphMeasure.uniform(0.3).top_eigenvalue(200) == pytest.approx(0.3, rel=1e-12)
    # directed rank one f ⊗ g: μ_max = ⟨f, g⟩ = ∫ e^x (1 + x) dx = e
    directed = DigraphMeasure.rank_one(torch.exp, lambda x: 1 + x)
    assert not directed.symmetric
    assert directed.top_eigenvalue(2000) == pytest.approx(math.e, rel=1e-6)
    # a graphon is a digraph measure: same eigenvalue as graphon_top_eigenvalue
    W = lambda x, y: 0.9 * (torch.abs(x - y) < 0.2) + 0.05  # noqa: E731
    assert DigraphMeasure.kernel(W).top_eigenvalue(400) == pytest.approx(graphon_top_eigenvalue(W, 400), rel=1e-12)
    # an atom δ_{x+a} has the Fourier eigenvalues e^{2πika}: top real part 1 (k = 0); sums add on constants
    assert DigraphMeasure.shift(0.25).top_eigenvalue(400) == pytest.approx(1.0, abs=1e-9)
    assert (DigraphMeasure.shift(0.25) + 0.5 * DigraphMeasure.uniform()).top_eigenvalue(400) == pytest.approx(1.5, abs=1e-9)
    assert (2 * DigraphMeasure.power_law(0.25)).top_eigenvalue(400) == pytest.approx(4.0, rel=1e-6)


def test_atoms_keep_their_weight_at_every_n_and_the_graphon_normalisation_loses_them():
    ring = DigraphMeasure.shift(0.25)
    for n in (8, 400):
        C = ring.sample(n).coupling
        expected = torch.roll(torch.eye(n, dtype=torch.float64), shifts=n // 4, dims=1)
        torch.testing.assert_close(C, expected, rtol=0, atol=0)
    # the same adjacency as a graph with the graphon's 1/N: coupling strength 1/N → 0
    x = torch.linspace(0, 1, 400, dtype=torch.float64)
    mean = GraphCoupling(400, ring.sample(400).coupling)(torch.sin(2 * math.pi * x))
    summed = GraphCoupling(400, ring.sample(400).coupling, normalization="sum")(torch.sin(2 * math.pi * x))
    torch.testing.assert_close(summed, 400 * mean)
    assert summed.abs().max() > 0.99 and mean.abs().max() < 0.003
    # spread over m nodes: rows still sum to the atom's weight
    spread = DigraphMeasure.shift(0.5, weight=2.0).sample(100, atom_width=10).coupling
    torch.testing.assert_close(spread.sum(1), torch.full((100,), 2.0, dtype=torch.float64))
    assert int((spread > 0).sum()) == 1000
    with pytest.raises(ValueError, match="between the nodes"):
        ring.sample(10)
    with pytest.raises(ValueError, match="grid"):
        ring.sample(8, positions="uniform")


def test_ring_neighbours_are_lattice_offsets():
    C = DigraphMeasure.ring(2, directed=False, weight=0.5).sample(7).coupling
    for i in range(7):
        assert sorted(C[i].nonzero().flatten().tolist()) == sorted({(i + s) % 7 for s in (-2, -1, 1, 2)})
    torch.testing.assert_close(C.sum(1), torch.full((7,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(C, C.T)


def test_kernel_samples_converge_to_the_limit_eigenvalue():
    W = DigraphMeasure.power_law(0.25)
    deterministic = W.sample(1000).coupling
    x = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    expected = (x[:, None] * x[None, :]) ** -0.25 / 1000
    expected.fill_diagonal_(0)
    torch.testing.assert_close(deterministic, expected, rtol=1e-12, atol=0)
    # a sparse W-random graph with Bernoulli(min(1, ρW))/(ρN): mean degree ~ ρN·∫∫W, top eigenvalue → 1/(1−2α)
    g = torch.Generator().manual_seed(0)
    sparse = W.sample(3000, sampling="random", density=0.05, sparse=True, generator=g)
    assert sparse.coupling.layout == torch.sparse_csr
    mu = torch.linalg.eigvalsh(sparse.coupling.to_dense())[-1]
    assert float(mu) == pytest.approx(2.0, rel=0.03)
    dense = sparse.coupling.to_dense()
    torch.testing.assert_close(dense, dense.T)  # a symmetric kernel gives an undirected graph
    assert dense.diagonal().abs().max() == 0
    # Erdős–Rényi as the measure p·dy: the same law as sample_graphon's, normalised by 1/N
    er = DigraphMeasure.uniform(0.5).sample(400, sampling="random", generator=torch.Generator().manual_seed(1)).coupling
    assert float((er > 0).float().mean()) == pytest.approx(0.5 * (1 - 1 / 400), abs=0.01)
    assert torch.unique(er[er > 0]).tolist() == [1 / 400]


def test_block_sampling_equals_one_block_and_directed_kernels_sample_both_directions():
    W = DigraphMeasure.rank_one(lambda x: 1 + x, lambda x: 2 - x)
    a = W.sample(300, sampling="random", density=0.3, generator=torch.Generator().manual_seed(2), block_size=1 << 22)
    b = W.sample(300, sampling="random", density=0.3, generator=torch.Generator().manual_seed(2), block_size=1000,
                 sparse=True)
    torch.testing.assert_close(a.coupling, b.coupling.to_dense())
    assert not torch.equal(a.coupling, a.coupling.T)


def test_networks_on_digraph_measures():
    n = 200
    omega = torch.linspace(-1, 1, n, dtype=torch.float64)
    theta = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    measure = DigraphMeasure.power_law(0.25) + DigraphMeasure.shift(0.5)
    net = KuramotoNetwork.on_digraph_measure(omega, 1.5, measure)
    C = measure.sample(n).coupling
    expected = omega + 1.5 * (C * torch.sin(theta[None, :] - theta[:, None])).sum(1)
    torch.testing.assert_close(net(torch.tensor(0.0), theta), expected)
    # all-to-all needs no matrix
    assert KuramotoNetwork.on_digraph_measure(omega, 1.0, DigraphMeasure.uniform()).coupling_operator.all_to_all
    fr = FiringRateNetwork.on_digraph_measure(n, measure, gain=0.7)
    torch.testing.assert_close(fr(torch.tensor(0.0), theta), -theta + 0.7 * C @ torch.tanh(theta))
    with pytest.raises(ValueError, match="needs an adjacency"):
        GraphCoupling(5, normalization="sum")


def test_graphon_sampling_is_unchanged_by_the_digraph_measure_picture():
    A = sample_graphon(erdos_renyi(0.5), 50)
    net = KuramotoNetwork(torch.zeros(50, dtype=torch.float64), 2.0, A)
    theta = torch.linspace(0, 3, 50, dtype=torch.float64)
    expected = 2.0 / 50 * (A * torch.sin(theta[None, :] - theta[:, None])).sum(1)
    torch.testing.assert_close(net(torch.tensor(0.0), theta), expected)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="alpha"):
        DigraphMeasure.power_law(0.5)
    with pytest.raises(ValueError, match="shift"):
        DigraphMeasure.shift(1.0)
    with pytest.raises(ValueError, match="density"):
        DigraphMeasure.uniform().sample(10, density=0)
    with pytest.raises(ValueError, match="atom_width"):
        DigraphMeasure.shift(0.5).sample(10, atom_width=0)
    with pytest.raises(ValueError, match="at least one"):
        DigraphMeasure()
