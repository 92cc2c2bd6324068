"""A warning before the loss spikes, on the main job: full-batch gradient descent at the edge of stability.

The main job (tanh MLP 64-200-200-10, squared loss, the first 1000 sklearn digits, GD at η = 0.1)
sharpens progressively until λ_max reaches 2/η = 20; the top Hessian direction is then unstable and
the iterate's component along it grows by |1 − ηλ| a step — slowly at first, hidden under the other
directions — until it leads the update and the loss jumps. ``InstabilityWarning`` reads, at every
step and with no extra pass, the curvature along the update against 2/η and the gradient-norm
z-score; their risk crosses 1 tens of steps before each jump. Full-batch training has no batch
noise, so the update sharpness's level is the threshold itself (1; the default, 1.25, is calibrated
for mini-batch runs).

Run 1 (``action="none"``): the alarms, the loss spikes (``lightning_dyn.dynamics.loss_spikes``: a
robust z-score ≥ 6 of log-loss against the previous 100 steps), and the lead of each warning.
Run 2 (``action="reduce_lr"``): the same run with the rate halved at each alarm episode — the
spikes of run 1 do not happen.

    python examples/early_warning.py          # ~1 minute on 2 CPU cores
    lightning-dyn report runs/early_warning/none/version_0   # instability_warning.png: risk against loss
    python -m tensorboard.main --logdir runs/early_warning   # custom scalars "instability warning"
"""

from __future__ import annotations

import argparse
import warnings

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import InstabilityWarning
from lightning_dyn.data import DigitsDataModule
from lightning_dyn.dynamics import loss_spikes
from lightning_dyn.models import SquaredLossMLP

#: how far before a spike an alarm counts as its warning (steps), as in the evaluation protocol
HORIZON = 50


class LossRecorder(pl.Callback):
    """The training loss of every step (the ground truth the warning is judged against)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def run(action: str, steps: int, root: str) -> tuple[InstabilityWarning, list[float]]:
    pl.seed_everything(0, verbose=False)
    model = SquaredLossMLP(widths=(64, 200, 200, 10), lr=0.1)
    # full batch: the secant is exact (no batch noise to absorb), so the level of the update sharpness
    # is the threshold itself rather than the default calibrated on mini-batch runs (1.25)
    warning = InstabilityWarning(action=action, levels={"update_sharpness_ratio": 1.0})
    recorder = LossRecorder()
    trainer = pl.Trainer(max_steps=steps, callbacks=[warning, recorder], log_every_n_steps=1,
                         logger=TensorBoardLogger(root, name=action, default_hp_metric=False),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DigitsDataModule(n=1000, batch_size=None))
    return warning, recorder.losses


def leads(alarms: list[int], spikes: list[int]) -> dict[int, int]:
    """Each spike's lead: steps from the first alarm episode that starts within HORIZON steps before it."""
    out = {}
    for s in spikes:
        before = [a for a in alarms if s - HORIZON <= a < s]
        if before:
            out[s] = s - before[0]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--root", default="runs/early_warning")
    args = parser.parse_args(argv)
    results = {}
    for action in ("none", "reduce_lr"):
        warning, losses = run(action, args.steps, args.root)
        alarms = [e["step"] for e in warning.events if e["event"] == "instability_warning"]
        spikes = loss_spikes(losses)
        results[action] = {"alarms": alarms, "spikes": spikes, "leads": leads(alarms, spikes),
                           "final_loss": losses[-1], "lr_factor": warning.lr_reduction.factor,
                           "raised_by": [e["raised_by"] for e in warning.events if e["event"] == "instability_warning"]}
        r = results[action]
        print(f"action={action}: alarm episodes at {alarms} (raised by {r['raised_by']}); loss spikes at {spikes}; "
              f"leads {r['leads']}; final loss {r['final_loss']:.4f}; learning-rate factor {r['lr_factor']:g}")
    return results


if __name__ == "__main__":
    main()
