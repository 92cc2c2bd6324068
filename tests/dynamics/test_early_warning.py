"""The early-warning engine against exact answers: the scores against numpy statistics, Adam's
metric and update against the step torch's Adam takes, the update-sharpness ratio against its
closed form on quadratics, and the ground-truth spike rule on series with known spikes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_dyn.dynamics import (InstabilityDetector, UpdateStability, WarningSignals, divergence_step,
                                    loss_spikes)


# -- the detector ----------------------------------------------------------------------------------
def test_scores_are_the_running_statistics_and_the_risk_their_largest_ratio_to_a_level():
    rng = np.random.default_rng(0)
    norms, rms, ratios = rng.lognormal(0, 0.3, 60), rng.lognormal(0, 0.2, 60), rng.uniform(0, 1.5, 60)
    levels = {"update_sharpness_ratio": 1.2, "update_rms_ratio": 1.5, "grad_norm_zscore": 2.5}
    detector = InstabilityDetector(levels, window=16, warmup=5, merge=3)
    for t in range(60):
        risk = detector.update(t, {"grad_norm": norms[t], "update_rms": rms[t], "update_sharpness_ratio": ratios[t]})
        past_n, past_r = norms[max(0, t - 16):t], rms[max(0, t - 16):t]
        want = {"update_sharpness_ratio": ratios[t]}
        if t >= 5:
            want["grad_norm_zscore"] = (norms[t] - past_n.mean()) / past_n.std()
            want["update_rms_ratio"] = rms[t] / np.median(past_r)
        assert risk.scores == pytest.approx(want, rel=1e-12)
        relative = {k: v / levels[k] for k, v in want.items()}
        assert risk.value == pytest.approx(max(relative.values()), rel=1e-12)
        assert sorted(risk.raised_by) == sorted(k for k, v in relative.items() if v >= 1)
        assert risk.alarm == (max(relative.values()) >= 1)


def test_alarms_closer_than_merge_are_one_episode_and_a_nonfinite_gradient_is_infinite_risk():
    detector = InstabilityDetector(merge=5)
    steps = [3, 4, 9, 15, 16, 30]
    news = [detector.update(t, {"update_sharpness_ratio": 2.0 if t in steps else 0.5}).new_episode for t in range(40)]
    assert [t for t, new in enumerate(news) if new] == [3, 15, 30]  # 9 is 5 after 4: same episode
    assert detector.episodes == 3
    risk = detector.update(40, {"grad_norm": math.inf, "update_sharpness_ratio": 0.1})
    assert risk.value == math.inf and risk.raised_by == ["nonfinite_gradient"] and risk.alarm
    assert math.inf not in detector.recent["grad_norm"]  # a non-finite value does not enter the window


def test_a_level_of_inf_turns_a_score_off_and_bad_levels_are_refused():
    detector = InstabilityDetector({"update_sharpness_ratio": math.inf})
    assert not detector.update(0, {"update_sharpness_ratio": 1e9}).alarm
    with pytest.raises(ValueError, match="unknown scores"):
        InstabilityDetector({"loss": 1.0})
    with pytest.raises(ValueError, match="positive"):
        InstabilityDetector({"grad_norm_zscore": 0.0})


def test_state_dict_continues_the_same_scores():
    rng = np.random.default_rng(1)
    signals = [{"grad_norm": float(x), "update_rms": float(y)} for x, y in rng.lognormal(0, 0.5, (80, 2))]
    straight, first = InstabilityDetector(window=10, warmup=3), InstabilityDetector(window=10, warmup=3)
    want = [straight.update(t, s) for t, s in enumerate(signals)]
    for t, s in enumerate(signals[:40]):
        first.update(t, s)
    resumed = InstabilityDetector(window=10, warmup=3)
    resumed.load_state_dict(first.state_dict())
    got = [resumed.update(t, s) for t, s in enumerate(signals[40:], start=40)]
    assert [r.scores for r in got] == [r.scores for r in want[40:]]
    assert resumed.episodes == straight.episodes


# -- the signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs", [(torch.optim.Adam, {}), (torch.optim.AdamW, {"weight_decay": 0.0}),
                                         (torch.optim.Adam, {"betas": (0.8, 0.95), "eps": 1e-3})])
def test_adam_preconditioner_and_update_rms_are_those_of_the_step_torch_takes(cls, kwargs):
    """Before each step: ``P⁻¹ m_{t+1}`` is exactly the normalised update Adam applies (Δθ = −η P⁻¹m)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=g, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64))]
    lr = 0.03
    opt = cls(params, lr=lr, **kwargs)
    stability = UpdateStability()
    for step in range(6):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64) * (10.0 if step == 4 else 1.0)
        moments = stability.adam_moments(opt, params, first_moment=True)
        before = torch.cat([p.detach().flatten() for p in params]).clone()
        assert moments is not None and (moments.t == 0) == (step == 0)  # zeros before the first step
        gradient = torch.cat([p.grad.flatten() for p in params])
        predicted = moments.normalised_update(gradient)
        rms = stability.adam_moments(opt, params, first_moment=True).update_rms(gradient)
        opt.step()
        moved = (before - torch.cat([p.detach().flatten() for p in params])) / lr
        torch.testing.assert_close(moved, predicted, rtol=1e-10, atol=1e-13)
        assert rms == pytest.approx(float(moved.square().mean().sqrt()), rel=1e-10)


def test_update_sharpness_ratio_on_a_quadratic_under_gd_is_eta_lambda_over_two():
    """GD on ½λx² (one dimension): the secant is λ exactly and the threshold 2/η."""
    x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    lam = 3.0
    for eta in (0.1, 0.5, 0.7):
        opt = torch.optim.SGD([x], lr=eta)
        stability = UpdateStability()
        ratios = []
        for step in range(5):
            opt.zero_grad()
            (0.5 * lam * x.square().sum()).backward()
            observed = stability.observe(opt, [x], step)
            if observed is not None:
                assert observed[0] == pytest.approx(lam, rel=1e-12)
                ratios.append(observed[1])
            opt.step()
        assert ratios == pytest.approx([eta * lam / 2] * 4, rel=1e-12)


def test_update_sharpness_ratio_under_adam_is_lambda_over_p_against_adams_threshold():
    """Adam on ½λx²: d = −η P⁻¹ m, so in the metric P the secant is λ/P of that step, and the
    ratio λη(1−β₁)/(P(2+2β₁)) — P read from the optimizer's state after each step."""
    x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    lam, eta, (b1, b2), eps = 2.0, 0.05, (0.9, 0.99), 1e-8
    opt = torch.optim.Adam([x], lr=eta, betas=(b1, b2), eps=eps)
    stability = UpdateStability()
    want = None
    for step in range(40):
        opt.zero_grad()
        (0.5 * lam * x.square().sum()).backward()
        observed = stability.observe(opt, [x], step)
        if want is not None:
            assert observed[1] == pytest.approx(want, rel=1e-9)
        opt.step()
        state = opt.state[x]
        t = float(state["step"])
        P = (1 - b1**t) * (math.sqrt(float(state["exp_avg_sq"]) / (1 - b2**t)) + eps)
        want = lam * eta * (1 - b1) / (P * (2 + 2 * b1))


def test_warning_signals_read_the_gradient_norm_and_nothing_else_under_sgd():
    g = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 4, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g))]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    signals = WarningSignals()
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        got = signals.observe(opt, params, step)
        norm = float(torch.cat([p.grad.flatten() for p in params]).norm())
        assert got["grad_norm"] == pytest.approx(norm, rel=1e-6)
        assert "update_rms" not in got and ("update_sharpness_ratio" in got) == (step > 0)
        opt.step()


# -- the ground truth ------------------------------------------------------------------------------
def test_loss_spikes_finds_the_injected_spikes_and_the_divergence():
    rng = np.random.default_rng(0)
    loss = list(np.exp(-np.arange(600) / 300) * np.exp(rng.normal(0, 0.02, 600)))
    for onset in (150, 160, 400):  # 150 and 160 are one spike (10 apart)
        loss[onset] *= 3.0
    assert loss_spikes(loss) == [150, 400]
    assert loss_spikes(loss[:500] + [float("nan")] + loss[501:]) == [150, 400, 500]  # read up to the divergence
    smooth = list(np.exp(-np.arange(300) / 50))
    assert loss_spikes(smooth) == [] and divergence_step(smooth) is None


def test_divergence_is_ten_times_the_running_maximum_or_not_finite():
    assert divergence_step([1.0, 2.0, 19.9]) is None
    assert divergence_step([1.0, 2.0, 20.1]) == 2
    assert divergence_step([1.0, math.inf]) == 1
    assert divergence_step([3.0, 2.0, 4.0, 39.0, 400.0]) == 4
    assert divergence_step([5.0, 1.0, 11.0]) is None  # against the maximum so far, not the last value
