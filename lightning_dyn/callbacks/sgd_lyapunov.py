"""SGDLyapunov: is the minimum training is at stable for SGD with this learning rate and batch size?

On its schedule (and/or once the training loss first falls below ``interpolation_tol``) the
callback linearises SGD at the current parameters on a fixed probe set and logs the top Lyapunov
exponent of that random linear system (``lightning_dyn.dynamics.sgd_stability``; Chemnitz & Engel 2024):
``dyn/sgd_lyapunov`` ± ``dyn/sgd_lyapunov_stderr`` (negative: SGD stays near this minimum),
GD's exponent ``dyn/gd_lyapunov``, Wu–Ma–E's ``dyn/wme_sharpness``, ``dyn/wme_nonuniformity`` and
``dyn/mean_square`` (mean-square stable iff ≤ 1), ``dyn/critical_lr`` (where λ crosses 0 for the
current batch size), ``dyn/probe_loss`` and ``dyn/near_interpolation``. At fit end, the stability
diagram (λ against η for several batch sizes) as a TensorBoard figure.

The learning rate and momentum (heavy ball or Nesterov, simulated with its buffer) are read from
the optimizer at each measurement, and the batch size is that of one optimizer step: the train
dataloader's, times the world size under DDP (the averaged gradient is that of the global batch),
times ``accumulate_grad_batches`` (the step averages every micro-batch's gradient); batches are
simulated as training draws them — random reshuffling when the loader
shuffles, i.i.d. otherwise (logged once, and in each history entry).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Literal, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import RandomSampler

from ..curvature.batches import batch_size, concatenate, select_samples, tensors_of
from ..curvature.context import measurement_context
from ..dynamics.sgd_stability import SGDStability, sgd_lyapunov
from ..curvature.sharded import sharded_model
from .base import DynamicsCallback, Measurement
from .validation import check_choice, check_positive, check_positive_int
from .compat import ConfigurationError
from .probe import canonical_order, check_measurable, default_loss, probe_set
from .figures import add_figure, stability_diagram_figure

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``precision="auto"`` switches to float32 above this many probe outputs (samples × outputs)
AUTO_FLOAT32_OUTPUTS = 2000


def _sampling(loader: Any) -> Literal["reshuffle", "iid"]:
    sampler = getattr(loader, "sampler", None)
    return "reshuffle" if isinstance(sampler, RandomSampler) or getattr(sampler, "shuffle", False) else "iid"


class SGDLyapunov(DynamicsCallback):
    """Top Lyapunov exponent of SGD linearised at the current parameters, critical learning rate,
    stability diagram.

    All arguments are keyword-only.

    Args:
        every_n_steps: measure every this many optimizer steps. Default 100, twice the curvature
            callbacks' cadence: a measurement simulates ``num_steps`` SGD steps on the probe set
            (with ``num_lrs`` learning rates for the diagram at fit end), and the exponent is only
            meaningful near interpolation, late in training.
        interpolation_tol: probe loss below which the point counts as interpolating; above it each
            measurement is flagged (``dyn/near_interpolation`` = 0, a warning with the loss) and
            describes the linearisation at the current point.
        on_interpolation: also measure once, at the first step whose training loss is below
            ``interpolation_tol`` (reads the loss every step: one host sync per step).
        method: ``"gram"`` (normal-space form from the NTK; needs ``criterion``) or ``"hvp"``
            (mini-batch Hessian-vector products; any twice-differentiable ``loss_fn``).
        criterion: ``criterion(outputs, targets)``, the mean batch loss on ``pl_module(inputs)``;
            default: the module's ``criterion`` attribute. Needed for ``"gram"``.
        loss_fn: ``loss_fn(pl_module, batch)`` for ``"hvp"``; default: the module's ``training_step``
            (required under manual optimization).
        probe_size: samples in the probe set SGD is simulated on (all ranks together; every rank
            simulates the whole set), drawn once from the training set by a private generator;
            default 256, or the whole training set when smaller.
        lr: the learning rate to judge (default: the optimizer's current one; its momentum and
            Nesterov flag are used too). Required when the optimizer is not SGD: the exponent is then
            that of plain SGD at this ``lr``.
        batch_size: the batch size to judge (default: the samples behind one optimizer step — the
            loader's batch size × the world size × ``accumulate_grad_batches``).
        batch_sizes: further batch sizes for the stability diagram (default: B/4, B/2, 2B within
            the probe set).
        sampling: how batches are drawn in the simulation: ``"reshuffle"`` or ``"iid"``; default
            (``None``) as the train loader draws them — reshuffling when it shuffles (Lightning's
            distributed sampler always does), i.i.d. otherwise.
        num_steps: simulated SGD steps per exponent.
        num_lrs: learning rates on the grid (critical η, diagram).
        max_gram_outputs: largest probe set (samples × outputs) ``"gram"`` accepts.
        hvp_directions: ``"hvp"``: top Hessian eigenvectors spanning the simulated normal space
            (Lanczos, about 4× as many products once per measurement).
        precision: of the normal-space factor and the simulation: ``"auto"`` — float64 up to
            ``AUTO_FLOAT32_OUTPUTS`` probe outputs (samples × outputs), float32 above (halves the
            memory traffic that dominates a large measurement; λ moved by 1e-6 on the benchmark) —
            or ``"float64"``, ``"float32"``.
        at_fit_end: measure once more when training ends, and draw the diagram.
        seed: seed of the private generator.
    """

    progress_bar_tag = "dyn/sgd_lyapunov"
    layout_category = "SGD stability (SGDLyapunov)"

    def layout(self) -> dict[str, list[str]]:
        return {"top Lyapunov exponent of SGD λ and of GD (λ < 0: the minimum is stable)":
                ["dyn/sgd_lyapunov", "dyn/gd_lyapunov"],
                "critical learning rate η_c for the current batch size": ["dyn/critical_lr"],
                "probe loss (interpolation below interpolation_tol)": ["dyn/probe_loss"]}

    def __init__(
        self,
        *,
        every_n_steps: int = 100,
        interpolation_tol: float = 1e-3,
        on_interpolation: bool = False,
        method: Literal["gram", "hvp"] = "gram",
        criterion: Optional[Criterion] = None,
        loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
        probe_size: Optional[int] = None,
        lr: Optional[float] = None,
        batch_size: Optional[int] = None,
        batch_sizes: Optional[list[int]] = None,
        sampling: Optional[Literal["reshuffle", "iid"]] = None,
        num_steps: int = 1000,
        num_lrs: int = 24,
        max_gram_outputs: int = 12000,
        hvp_directions: int = 32,
        precision: Literal["auto", "float64", "float32"] = "auto",
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        check_choice("method", method, ("gram", "hvp"))
        check_choice("precision", precision, ("auto", "float64", "float32"))
        check_choice("sampling", sampling, (None, "reshuffle", "iid"))
        if probe_size is not None:
            check_positive_int("probe_size", probe_size)
        for name, value in (("num_steps", num_steps), ("num_lrs", num_lrs),
                            ("max_gram_outputs", max_gram_outputs), ("hvp_directions", hvp_directions)):
            check_positive_int(name, value)
        if num_steps < 20:
            raise ConfigurationError(f"`num_steps` must be at least 20 (the standard error uses 20 blocks), got {num_steps}")
        check_positive("interpolation_tol", interpolation_tol)
        check_positive("lr", lr, optional=True)
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        for b in batch_sizes or []:
            check_positive_int("batch_sizes", b)
        self.interpolation_tol, self.on_interpolation = float(interpolation_tol), on_interpolation
        self.method, self.criterion, self.loss_fn = method, criterion, loss_fn
        self.probe_size, self.lr, self.batch_size, self.batch_sizes = probe_size, lr, batch_size, batch_sizes
        self.num_steps, self.num_lrs, self.max_gram_outputs = num_steps, num_lrs, max_gram_outputs
        self.hvp_directions = hvp_directions
        self.precision = precision
        #: the probe set as one batch — (inputs, targets) for "gram", any batch for "hvp"
        self.data: Any = None
        self.sampling_arg = sampling
        self.sampling: Literal["reshuffle", "iid"] = sampling or "iid"
        self.global_batch = 1
        self.num_outputs = 1
        self.interpolation_measured = False
        self.warned_far = False
        self.last: Optional[SGDStability] = None

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        if sharded_model(pl_module):
            raise ConfigurationError(
                "SGDLyapunov does not support sharded parameters (FSDP2 fully_shard): it linearises SGD with "
                "per-sample Jacobians of the whole model on every rank; measure it on an unsharded run (DDP or one "
                "device)")
        self._check_optimizer(trainer)
        loader = trainer.train_dataloader
        # probe_size counts all ranks' samples; every rank simulates the whole set
        batches = probe_set(trainer, pl_module, self.probe_size, seed=self.seed, default_size=256,
                            owner="SGDLyapunov").all_batches()
        if self.method == "gram":
            if not all(isinstance(b, (tuple, list)) and len(b) >= 2 for b in batches):
                raise ConfigurationError("SGDLyapunov(method='gram') needs (inputs, targets) batches from the train "
                                         "dataloader; method='hvp' takes any batch its loss takes (dicts, BatchEncoding)")
            batches = [(b[0], b[1]) for b in batches]
        try:
            data = concatenate(batches)
        except ValueError as err:
            raise ConfigurationError(f"SGDLyapunov: {err}") from None
        # one order on every rank, defined by the samples' content
        self.data = select_samples(data, canonical_order(*[t for t in tensors_of(data) if t.dim() > 0]))
        n = batch_size(self.data)
        self.sampling = self.sampling_arg or _sampling(loader)
        # the samples behind one optimizer step: the loader's batch on every rank, every micro-batch
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        self.global_batch = self.batch_size or \
            int(getattr(loader, "batch_size", None) or 1) * trainer.world_size * accumulate
        if self.global_batch > n:
            raise ConfigurationError(
                f"the batch size ({self.global_batch}) is larger than the probe set ({n} samples): raise `probe_size`")
        if self.method == "gram":
            self.criterion = self.criterion or getattr(pl_module, "criterion", None)
            if self.criterion is None:
                raise ConfigurationError("method='gram' needs `criterion(outputs, targets)` (or a `criterion` attribute "
                                         "on the module); or use method='hvp' with the training_step loss")
            with measurement_context(pl_module, train=False, seed=self.seed), torch.no_grad():
                outputs = pl_module(self.data[0][:1])
            self.num_outputs = outputs[0].numel()
            if n * outputs[0].numel() > self.max_gram_outputs:
                raise ConfigurationError(
                    f"the probe set has {n}×{outputs[0].numel()} outputs, more than max_gram_outputs="
                    f"{self.max_gram_outputs} for method='gram': use method='hvp', or a smaller `probe_size`")
        else:
            self.loss_fn = default_loss(pl_module, self.loss_fn, "SGDLyapunov")
            check_measurable(pl_module, self.loss_fn, self.data, owner="SGDLyapunov", seed=self.seed,
                             backend="double_backward")
        rank_zero_info(f"SGDLyapunov: simulating SGD with batch size {self.global_batch} on {n} probe samples, "
                       f"batches drawn by {'random reshuffling' if self.sampling == 'reshuffle' else 'i.i.d. sampling'}")

    def _check_optimizer(self, trainer: Any) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if not isinstance(optimizer, torch.optim.SGD):
            if self.lr is None:
                raise ConfigurationError(
                    f"SGDLyapunov linearises plain SGD; the optimizer is {type(optimizer).__name__}, whose dynamics "
                    "this exponent does not describe. Pass `lr=` to ask whether SGD at that learning rate would be stable here")
            return
        group = optimizer.param_groups[0]
        if group.get("weight_decay", 0) or group.get("dampening", 0):
            rank_zero_warn("SGDLyapunov: weight decay and dampening are not modelled; the exponent is that of SGD "
                           "(with its momentum) on the loss alone")

    # -- measurement ----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.on_interpolation and not self.interpolation_measured and trainer.global_step != self.last_step:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            below = loss is not None and float(loss) <= self.interpolation_tol
            if self.agree(trainer, below):
                self.interpolation_measured = True
                self._measure_and_log(trainer, pl_module, in_loop=True)

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        assert self.data is not None
        optimizer = trainer.optimizers[0]
        group = optimizer.param_groups[0] if isinstance(optimizer, torch.optim.SGD) else {}
        lr = self.lr or float(group["lr"])
        momentum, nesterov = float(group.get("momentum", 0.0)), bool(group.get("nesterov", False))
        n, B = batch_size(self.data), self.global_batch
        sizes = self.batch_sizes or [b for b in (B // 4, B // 2, 2 * B) if 1 <= b <= n]
        # "hvp" differentiates loss_fn alone: no criterion is called (a module may have no forward)
        criterion = self.criterion if self.method == "gram" else None
        result = sgd_lyapunov(pl_module, criterion, self.data, lr=lr, batch_size=B, method=self.method,
                              momentum=momentum, nesterov=nesterov,
                              loss_fn=self.loss_fn, sampling=self.sampling, num_steps=self.num_steps,
                              num_lrs=self.num_lrs, batch_sizes=[b for b in sizes if b <= n],
                              interpolation_tol=self.interpolation_tol, generator=self.generator, dtype=self._dtype(),
                              hvp_directions=self.hvp_directions, seed=self.seed)
        if not math.isfinite(result.loss):
            raise FloatingPointError(f"the probe loss is {result.loss}")
        if not result.near_interpolation and not self.warned_far:
            self.warned_far = True
            rank_zero_warn(f"SGDLyapunov: the probe loss {result.loss:.3g} is above interpolation_tol="
                           f"{self.interpolation_tol:g}; λ describes SGD linearised at the current point, not at a "
                           "minimum (flagged by dyn/near_interpolation = 0)")
        self.last = result
        scalars = {"dyn/sgd_lyapunov": result.exponent, "dyn/sgd_lyapunov_stderr": result.stderr,
                   "dyn/gd_lyapunov": result.gd_exponent, "dyn/wme_sharpness": result.sharpness,
                   "dyn/probe_loss": result.loss, "dyn/near_interpolation": float(result.near_interpolation)}
        if math.isfinite(result.mean_square):  # plain SGD, method "gram"
            scalars.update({"dyn/wme_nonuniformity": result.nonuniformity, "dyn/mean_square": result.mean_square})
        if math.isfinite(result.critical_lr):
            scalars["dyn/critical_lr"] = result.critical_lr
        return Measurement(scalars, hvps=result.products, extra={"sampling": self.sampling})

    def _dtype(self) -> torch.dtype:
        if self.precision == "auto":
            assert self.data is not None
            outputs = self.num_outputs * batch_size(self.data)
            return torch.float32 if self.method == "gram" and outputs > AUTO_FLOAT32_OUTPUTS else torch.float64
        return torch.float64 if self.precision == "float64" else torch.float32

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        writer = self.tensorboard(trainer)
        if writer is not None and self.last is not None:
            r, d = self.last, self.last.diagram
            fig = stability_diagram_figure(d.lrs, d.batch_sizes, d.exponents, d.stderr, lr=r.lr,
                                           batch_size=r.batch_size, exponent=r.exponent, step=trainer.global_step)
            add_figure(writer, "dyn/stability_diagram", fig, trainer.global_step)

    # -- state ----------------------------------------------------------------------------------
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, method=self.method, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        return {"interpolation_measured": self.interpolation_measured}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.interpolation_measured = state["interpolation_measured"]
