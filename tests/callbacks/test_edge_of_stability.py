"""EdgeOfStability and HessianSharpness on real Trainers: the phenomenon, the views, the actions."""

import re
import statistics

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness
from lightning_dyn.callbacks import ConfigurationError
from lightning_dyn.cli import demo
from tests.readme import numbers_in, readme_numbers
from lightning_dyn.data import DigitsDataModule
from lightning_dyn.dynamics import REGIMES
from lightning_dyn.models import SquaredLossMLP
from lightning_dyn.report import read_scalars
from tests.helpers import fit_config_and_report
from tests.contract.harness import seed_all


def _fit(callbacks, *, steps=40, n=200, logger=False, module=None, **kwargs):
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, **kwargs)
    trainer.fit(module or SquaredLossMLP(widths=(64, 32, 10)), DigitsDataModule(n=n))
    return trainer


SUMMARY = ("progressive sharpening {n} → {n} by step {n} ({n} measurements); at the edge (threshold {n}) from step {n}; "
           "sharpness/threshold then {n}–{n} (median {n}); the loss rose on {n} of {n} logged steps yet fell {n} → {n}")


@pytest.mark.slow
def test_demo_reaches_and_holds_the_edge_of_stability(tmp_path):
    text = demo(["--out", str(tmp_path)])  # the README's demo, as it runs by default
    # the summary the README quotes, number by number: sharpness and ratios within one unit of their last digit,
    # the steps exactly (a measurement every 50), the count of rising-loss steps within 5% (the
    # edge of stability is where GD is most sensitive to round-off)
    got, want = numbers_in(text.split("\n")[0]), readme_numbers(SUMMARY)
    assert len(got) == len(want)
    (s0, s1, step, count, thr, edge, lo, hi, med, rose, logged, l0, l1) = got
    assert (s0, s1, thr) == pytest.approx((want[0], want[1], want[4]), abs=0.1001)  # printed to 0.1
    assert (lo, hi, med) == pytest.approx((want[6], want[7], want[8]), abs=0.01001)  # printed to 0.01
    assert (step, count, edge, logged) == (want[2], want[3], want[5], want[10])
    assert rose == pytest.approx(want[9], rel=0.05)
    assert (l0, l1) == pytest.approx((want[11], want[12]), rel=0.01)
    # and the phenomenon itself, from the event files
    series = read_scalars(next(tmp_path.rglob("events.out.tfevents.*")).parent)
    sharp = series["dyn/eos_sharpness"]
    ratio = series["dyn/sharpness_ratio"]
    regime = series["dyn/regime"]
    assert all(v == pytest.approx(20.0) for _, v in series["dyn/stability_threshold"])
    reached = next(s for s, r in ratio if r >= 0.9)
    before = [v for s, v in sharp if s <= reached]
    assert max(before) >= 3 * sharp[0][1], "progressive sharpening by at least 3x before the edge"
    last_third = [r for s, r in ratio if s >= 1400]
    assert 0.95 <= statistics.median(last_third) <= 1.10
    codes = [int(round(v)) for s, v in regime if s >= 1400]
    assert statistics.mode(codes) == REGIMES.index("edge")
    assert "at the edge (threshold 20.0)" in text and "the loss rose on" in text


def _layout(acc) -> dict:
    """The custom-scalars layout TensorBoard shows: the last record of the run, as category → chart → patterns."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    record = acc.Tensors("custom_scalars__config__")[-1]
    layout = layout_pb2.Layout.FromString(record.tensor_proto.string_val[0])
    return {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}


def test_tensorboard_views_layout_histograms_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    eos = EdgeOfStability(every_n_steps=10, hessian=HessianSettings(k=2, probe_size=200), density_at_fit_end=True)
    sharp = HessianSharpness(every_n_steps=20, hessian=HessianSettings(k=3, probe_size=100), trace_every_n_steps=20)
    monitor = GradientExplosionMonitor(every_n_steps=10)
    _fit([eos, sharp, monitor], logger=logger)
    assert eos.last_density is not None and sharp.last_density is None  # no density schedule came round
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"dyn/top_eigenvalues", "dyn/eos_top_eigenvalues"} <= set(tags["histograms"])
    assert {"dyn/sharpness_figure", "dyn/eos_figure", "dyn/eos_spectral_density"} <= set(tags["images"])
    scalars = set(tags["scalars"])
    assert {"dyn/sharpness_ratio", "dyn/stability_threshold", "dyn/hessian_trace", "dyn/eig_2",
            "dyn/eos_sharpness", "dyn/eos_eig_1"} <= scalars
    # no always-1 flag, no series duplicating another, no hp_metric placeholder
    assert not {"dyn/edge", "dyn/eig_0", "dyn/eos_eig_0", "hp_metric"} & scalars
    assert "dyn/regime_changes/text_summary" in tags["tensors"]  # the category, as text where it changes
    # one layout holding every attached callback's section; each pattern is one exact tag that was logged
    layout = _layout(acc)
    assert set(layout) == {eos.layout_category, sharp.layout_category, "gradients (GradientExplosionMonitor)"}
    for charts in layout.values():
        for title, patterns in charts.items():
            for pattern in patterns:
                matched = [t for t in scalars if re.search(pattern, t)]
                assert len(matched) == 1 and pattern == f"^{re.escape(matched[0])}$", (title, pattern, matched)
    assert ["^dyn/sharpness_ratio$"] in layout[eos.layout_category].values()
    assert "^dyn/regime$" not in str(layout)  # a category is not a curve to smooth: it is told as text
    # one tag, one writer: each series holds one callback's measurements only
    assert [s.step for s in acc.Scalars("dyn/sharpness")] == [h["step"] for h in sharp.history]
    assert [s.step for s in acc.Scalars("dyn/eos_sharpness")] == [h["step"] for h in eos.history]
    # the cost is everything the callback did: the per-measurement seconds are part of the total
    total = acc.Scalars("dyn/cost/EdgeOfStability_total_seconds")[-1].value
    assert total >= sum(s.value for s in acc.Scalars("dyn/cost/EdgeOfStability_seconds")) > 0
    assert acc.Scalars("dyn/cost/EdgeOfStability_total_hvps")[-1].value == eos.total_hvps > sum(
        h["hvps"] for h in eos.history)  # the fit-end density's 40 products are counted
    # the report: a section per callback, each figure a PNG of its own
    from lightning_dyn.report import report

    text = report(logger.log_dir, tmp_path / "png")
    lines = text.splitlines()
    assert lines[0].startswith("EdgeOfStability: ") and lines[1].startswith("HessianSharpness: top Hessian eigenvalue")
    assert any(line.startswith("gradients (") for line in lines) and lines[-1].startswith("training loss: ")
    written = {p.name for p in (tmp_path / "png").glob("*.png")}
    assert {"edge_of_stability.png", "dyn_sharpness_figure.png", "dyn_eos_figure.png",
            "dyn_eos_spectral_density.png"} <= written


def test_stop_action_stops_training_on_crossing():
    eos = EdgeOfStability(every_n_steps=5, hessian=HessianSettings(probe_size=200), action="stop", act_on="above")
    trainer = _fit([eos], steps=200, module=SquaredLossMLP(widths=(64, 32, 10), lr=1.5))
    assert trainer.global_step < 200
    assert eos.events and eos.events[0]["event"] == "stop"


def test_reduce_lr_action_and_a_scheduler_move_the_threshold():
    eos = EdgeOfStability(every_n_steps=5, hessian=HessianSettings(probe_size=200), action="reduce_lr", lr_factor=0.5)
    module = SquaredLossMLP(widths=(64, 32, 10), lr=1.5)
    with pytest.warns(UserWarning, match="learning rate multiplied"):
        trainer = _fit([eos], steps=30, module=module)
    # the optimizer's own rate is the schedule's; the reduction is the factor applied around its steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1.5
    assert eos.lr_reduction.factor < 1 and eos.history[-1]["dyn/lr_factor"] == eos.lr_reduction.factor
    thresholds = [h["dyn/stability_threshold"] for h in eos.history]
    assert thresholds[-1] == pytest.approx(2 / (1.5 * eos.lr_reduction.factor))  # 2/η of the rate it steps with
    assert thresholds[-1] > thresholds[0]


def test_adam_is_compared_through_its_preconditioner():
    eos = EdgeOfStability(every_n_steps=10, hessian=HessianSettings(probe_size=200))
    _fit([eos], steps=20, module=SquaredLossMLP(widths=(64, 32, 10), optimizer="adam", lr=1e-3))
    assert eos.history[-1]["dyn/stability_threshold"] == pytest.approx(38 / 1e-3)
    assert eos.history[-1]["dyn/preconditioned_sharpness"] > 0
    assert "dyn/eos_sharpness" not in eos.history[-1]


class _NoneStep(SquaredLossMLP):
    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        return None


class _Adagrad(SquaredLossMLP):
    def configure_optimizers(self):
        return torch.optim.Adagrad(self.parameters(), lr=0.1)


def test_bad_setups_fail_before_training():
    with pytest.raises(ConfigurationError, match="Adagrad; supported: SGD"):
        _fit([EdgeOfStability(hessian=HessianSettings(probe_size=100))], module=_Adagrad(widths=(64, 8, 10)))
    with pytest.raises(ConfigurationError, match="larger than the training set"):
        _fit([EdgeOfStability(hessian=HessianSettings(probe_size=5000))])
    with pytest.raises(ConfigurationError, match="must return the loss"):
        _fit([HessianSharpness(hessian=HessianSettings(probe_size=100))], module=_NoneStep(widths=(64, 8, 10)))


class _NoOptimizer(SquaredLossMLP):
    def configure_optimizers(self):
        return None


def test_no_optimizer_is_refused_at_setup():
    with pytest.raises(ConfigurationError, match="needs an optimizer"):
        _fit([EdgeOfStability(hessian=HessianSettings(probe_size=100))], module=_NoOptimizer(widths=(64, 8, 10)))


@pytest.mark.parametrize("config", ["edge_of_stability", "momentum", "nesterov", "adam"])
def test_shipped_configs_run_and_report(config, tmp_path):
    run_dir, text = fit_config_and_report(config, tmp_path, "--trainer.max_steps", "10",
                                          "--trainer.callbacks.init_args.every_n_steps", "5")
    assert "sharpness" in text and (run_dir / "edge_of_stability.png").exists()


class _TokenClassifier(pl.LightningModule):
    """Embedding → linear; trained with Adam on tokens 0–7 only, while the probe set holds 8 and 9."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(8, 3))

    def forward(self, tokens):
        return self.net(tokens)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_adam_coordinates_never_updated_are_left_out_of_the_preconditioned_sharpness():
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_dyn.curvature import DenseOperator, top_eigenpairs
    from lightning_dyn.dynamics.optimizer_thresholds import stability_scaling
    from tests.helpers import dense_hessian

    g = torch.Generator().manual_seed(0)
    seen = torch.randint(0, 8, (24, 2), generator=g)
    unseen = torch.tensor([[8, 9], [9, 8], [8, 8], [9, 9]])
    tokens = torch.cat([seen, unseen])
    labels = torch.randint(0, 3, (28,), generator=g)
    probe = [(tokens, labels)]
    # the loader serves only the first 24 samples (tokens 0–7): rows 8 and 9 of the embedding never get a gradient
    loader = DataLoader(TensorDataset(seen, labels[:24]), batch_size=8)
    seed_all(0)
    module = _TokenClassifier()
    eos = EdgeOfStability(every_n_steps=3, hessian=HessianSettings(probe_batches=probe, tol=1e-8, max_matvecs=80, loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])), density_at_fit_end=False)
    trainer = pl.Trainer(max_steps=3, callbacks=[eos], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    # rows 8 and 9 of the 10×4 embedding: 8 coordinates whose second moment is exactly 0
    assert eos.history[-1]["dyn/never_updated_coordinates"] == 8
    optimizer = trainer.optimizers[0]
    params = list(module.parameters())
    scaling = stability_scaling(optimizer, params)
    H = dense_hessian(module.net, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), probe)
    D = scaling.scale.double()
    assert int((D == 0).sum()) == 8 and D[32:40].eq(0).all()  # embedding rows 8, 9 (flat 32..39)
    lr = optimizer.param_groups[0]["lr"]
    want = float(torch.linalg.eigvalsh(D[:, None] * H * D[None, :] / lr)[-1])
    assert eos.history[-1]["dyn/preconditioned_sharpness"] == pytest.approx(want, rel=1e-6)
    # what ε alone would have made of those rows: the curvature there amplified by about 1/ε
    state = [optimizer.state[p] for p in params]
    t = float(state[0]["step"])
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    P = torch.cat([(1 - beta1**t) * ((s["exp_avg_sq"].reshape(-1).double() / (1 - beta2**t)).sqrt() + 1e-8)
                   for s in state])
    raw = P.rsqrt()
    unmasked = float(torch.linalg.eigvalsh(raw[:, None] * H * raw[None, :])[-1])
    assert unmasked > 1e3 * want
    assert top_eigenpairs(DenseOperator(D[:, None] * H * D[None, :] / lr), tol=1e-10).values[0] == pytest.approx(want)


def test_the_command_line_lists_its_commands_and_refuses_unknown_ones():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lightning_dyn.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert listed[:3] == ["demo", "fit", "report"]
    wrong = subprocess.run([sys.executable, "-m", "lightning_dyn.cli", "train"], capture_output=True, text=True,
                           timeout=60)
    assert wrong.returncode == 2 and "unknown command 'train'" in wrong.stderr


def _rayleigh_and_batch_sharpness(module, x, y, batch, draws, seed=0):
    """Independent: the full-gradient Rayleigh quotient, and the batch sharpness as the mean over
    ``draws`` random mini-batches (torch.func forward-over-reverse products, float64)."""
    net = module.net.double()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(w, xb, yb):
        chunks = w.split([s.numel() for s in shapes])
        out = torch.func.functional_call(net, {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}, (xb,))
        return 0.5 * ((out - yb) ** 2).sum(1).mean()

    def quotient(xb, yb):
        gradient = torch.func.grad(lambda w: loss_of(w, xb, yb))
        g = gradient(flat)
        return float(g @ torch.func.jvp(gradient, (flat,), (g,))[1] / (g @ g))

    generator = torch.Generator().manual_seed(seed)
    ratios = [quotient(x[i], y[i]) for i in (torch.randperm(len(x), generator=generator)[:batch]
                                              for _ in range(draws))]
    module.net.float()
    return quotient(x, y), float(torch.tensor(ratios).mean()), float(torch.tensor(ratios).std() / draws ** 0.5)


def test_batch_sharpness_beside_lambda_max_under_minibatch_sgd(tmp_path):
    """Mini-batch SGD: ``dyn/batch_sharpness`` at every measurement, with its standard error and its
    ratio to 2/η; the last one agrees with an independent estimate over 200 mini-batches."""
    seed_all(0)
    module = SquaredLossMLP(widths=(64, 8, 10), lr=0.5)
    eos = EdgeOfStability(every_n_steps=10, hessian=HessianSettings(probe_size=200))
    logger = TensorBoardLogger(tmp_path, name="", version="")
    pl.Trainer(max_steps=30, callbacks=[eos], logger=logger, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module, DigitsDataModule(n=200, batch_size=20, shuffle=True))
    series = read_scalars(tmp_path)
    steps = [s for s, _ in series["dyn/eos_sharpness"]]
    assert [s for s, _ in series["dyn/batch_sharpness"]] == steps == [10, 20, 30]
    for (_, bs), (_, ratio) in zip(series["dyn/batch_sharpness"], series["dyn/batch_sharpness_ratio"]):
        assert ratio == pytest.approx(bs * 0.5 / 2, rel=1e-5)
    from lightning_dyn.data import digits_tensors
    x, y = (t.double() for t in digits_tensors(200))
    _, reference, reference_se = _rayleigh_and_batch_sharpness(module, x, y, 20, 200)
    logged, logged_se = series["dyn/batch_sharpness"][-1][1], series["dyn/batch_sharpness_stderr"][-1][1]
    assert logged_se > 0
    assert abs(logged - reference) < 4 * (logged_se ** 2 + reference_se ** 2) ** 0.5
    assert "batch sharpness" in eos.summary()
    # the report draws and tells it too
    from lightning_dyn.report import report
    text = report(tmp_path, tmp_path / "report")
    first, last = series["dyn/batch_sharpness_ratio"][0][1], series["dyn/batch_sharpness_ratio"][-1][1]
    assert f"batch sharpness/threshold {first:.2f} → {last:.2f}" in text
    assert (tmp_path / "report" / "edge_of_stability.png").exists()


def test_batch_sharpness_at_full_batch_is_off_by_default_and_the_rayleigh_quotient_when_asked(tmp_path):
    seed_all(0)
    quiet = EdgeOfStability(every_n_steps=10, update_sharpness=False)
    _fit([quiet], steps=10)
    assert quiet.batch_sharpness is None and all("dyn/batch_sharpness" not in h for h in quiet.history)
    seed_all(0)
    module = SquaredLossMLP(widths=(64, 8, 10), lr=0.5)
    asked = EdgeOfStability(every_n_steps=10, batch_sharpness=1)
    _fit([asked], steps=10, module=module)
    from lightning_dyn.data import digits_tensors
    x, y = (t.double() for t in digits_tensors(200))
    rayleigh, _, _ = _rayleigh_and_batch_sharpness(module, x, y, 200, 1)
    last = asked.history[-1]
    assert last["dyn/batch_sharpness"] == pytest.approx(rayleigh, rel=1e-4)  # float32 training, float64 check
    assert last["dyn/batch_sharpness"] <= last["dyn/eos_sharpness"] * (1 + 1e-4)


def test_no_batch_sharpness_for_adaptive_optimizers_and_bad_values_refused():
    seed_all(0)
    eos = EdgeOfStability(every_n_steps=10, batch_sharpness=4)
    trainer = pl.Trainer(max_steps=10, callbacks=[eos], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(SquaredLossMLP(widths=(64, 8, 10), optimizer="adam", lr=1e-3),
                DigitsDataModule(n=200, batch_size=20, shuffle=True))
    assert eos.batch_sharpness is None and all("dyn/batch_sharpness" not in h for h in eos.history)
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigurationError, match="batch_sharpness"):
            EdgeOfStability(batch_sharpness=bad)
