"""The tracker: warm/cold rule, the space, the products' error reuse, its state."""

import torch

from lightning_dyn.curvature import DenseOperator, EigenTracker, HessianOperator
from tests.helpers import mlp, mse_loss, regression_data


def _dense(n=30, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    values = torch.linspace(0.1, 5.0, n, dtype=torch.float64) + shift * torch.linspace(0, 1, n, dtype=torch.float64)
    return Q @ torch.diag(values) @ Q.T


def test_warm_cold_rule_and_accuracy():
    tracker = EigenTracker(k=2, tol=1e-8, cold_every=3)
    starts = []
    for i in range(7):
        A = _dense(shift=0.01 * i)
        result = tracker.measure(lambda known: DenseOperator(A))
        starts.append(tracker.last_cold)
        exact = torch.linalg.eigvalsh(A).flip(0)[:2]
        assert torch.allclose(result.values, exact, rtol=1e-7)
    assert starts == [True, False, False, True, False, False, True]
    assert tracker.measurements == 7


def test_a_changed_space_drops_the_warm_start():
    tracker = EigenTracker(cold_every=None)
    tracker.follow(("a",))
    tracker.measure(lambda known: DenseOperator(_dense()))
    assert not tracker.next_is_cold
    assert not tracker.follow(("a",))
    assert tracker.follow(("a", "b"))  # dropped a warm start
    assert tracker.next_is_cold
    tracker.measure(lambda known: DenseOperator(_dense()))
    assert tracker.last_cold


def test_the_difference_error_is_estimated_once_after_a_cold_start_and_reused():
    model = mlp(torch.nn.Tanh, sizes=(4, 8, 2))
    x, y = regression_data(n=20, d=4, c=2)
    known = []

    def build(error):
        known.append(error)
        return HessianOperator(model, mse_loss, [(x, y)], backend="finite_difference", known_error=error)

    tracker = EigenTracker(tol=1e-3, cold_every=3)
    for _ in range(5):
        tracker.measure(build)
    # cold (estimates, keeps none), warm (estimates, keeps it), warm (reuses), cold, warm (estimates)
    assert known[0] is None and known[1] is None and known[2] is not None and known[2] > 0
    assert known[3] is None and known[4] is None


def test_state_dict_round_trip_resumes_warm():
    tracker = EigenTracker(k=2, tol=1e-6)
    A = _dense()
    tracker.measure(lambda known: DenseOperator(A))
    resumed = EigenTracker(k=2, tol=1e-6)
    resumed.load_state_dict(tracker.state_dict())
    assert not resumed.next_is_cold and resumed.measurements == 1
    result = resumed.measure(lambda known: DenseOperator(A))
    assert not resumed.last_cold
    assert torch.allclose(result.values, torch.linalg.eigvalsh(A).flip(0)[:2], rtol=1e-5)
    cold = EigenTracker(k=2)
    cold.load_state_dict(tracker.state_dict(vectors=False))
    assert cold.next_is_cold


def test_a_caller_with_its_own_solver_follows_the_same_rule():
    """start()/record(): the rule and the state for a solver that calls top_eigenpairs itself."""
    from lightning_dyn.curvature import top_eigenpairs

    tracker = EigenTracker(k=1, tol=1e-8, cold_every=2)
    A = _dense()
    starts = []
    for _ in range(4):
        init = tracker.start()
        starts.append(init is None)
        tracker.record(top_eigenpairs(DenseOperator(A), tol=1e-8, init=init), cold=init is None)
    assert starts == [True, False, True, False] and tracker.measurements == 4
    tracker.record(None, cold=True)  # a solve that left no vectors (a dense path): the next is cold
    assert tracker.start() is None
