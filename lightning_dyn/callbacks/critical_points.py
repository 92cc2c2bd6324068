"""CriticalPoints: the critical points of the model's scalar input–output map, over training.

For a model ``f: ℝⁿ → ℝ`` with few inputs (``n`` up to ~10), on its schedule the callback finds
the points of an input box where ``∇ₓf = 0`` (``lightning_dyn.function_classes``: multi-start
Newton on the input gradient with input Hessians, in float64 on a copy of the parameters, warm
started from the last measurement's critical points) and logs how many there are by Morse index —
``dyn/critical_points_index_0`` minima, ``…_index_<n>`` maxima, saddles between — with
``dyn/critical_points`` (all; a lower bound), ``dyn/critical_points_estimated`` (how many the
starts' hit counts suggest: above the count, the search looks incomplete — raise ``starts``),
``dyn/critical_points_degenerate`` (a singular input Hessian),
``dyn/critical_points_min_grad_norm`` (the smallest ``‖∇ₓf‖`` seen on the box: the evidence when
none is found) and ``dyn/critical_points_min_abs_eigenvalue`` (how close the nearest one is to
degenerate). With a TensorBoard logger, a figure of the map with its critical points
(``dyn/critical_points_map``, 1-D and 2-D inputs) at every measurement, and as text
(``dyn/function_class``, at the first measurement and whenever it changes: training can drive a
weight to numerical rank deficiency) which case of the theorem of Kuehn & Kuntz (arXiv:2405.09351)
the architecture is in with its current weights: no critical points possible (non-increasing
widths; a neural ODE on its input space), Morse for generic weights (augmented, no bottleneck), or
degenerate critical points possible (a bottleneck, a rank-deficient weight).

The box is by default the bounding box of the training inputs (``probe_size`` samples drawn once by
a private generator). Every rank searches the same box with the same starts and the same weights,
so every rank logs the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ..function_classes import CriticalPointSearch, classify_architecture, find_critical_points
from ..function_classes.architecture import FunctionClass
from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .figures import add_figure, critical_points_figure
from .probe import ForwardFn, InputFn, batch_inputs, probe_set
from .validation import check_positive_int, check_tolerance

class _Forward(nn.Module):
    """``forward_fn(module, x)`` as a module, so the search can evaluate it on a float64 copy of the
    module's parameters (``torch.func.functional_call``) without touching the module."""

    def __init__(self, module: nn.Module, forward_fn: ForwardFn) -> None:
        super().__init__()
        self.module, self.forward_fn = module, forward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.module, x)


class CriticalPoints(DynamicsCallback):
    """Critical points of the model's scalar input–output map on a box of inputs (module docstring).

    All arguments are keyword-only.

    Args:
        every_n_steps: measure every this many optimizer steps. Default 100: a search is about
            ``max_iter·(n + 2)`` passes over ``starts`` inputs (a fraction of a second for a small
            network on 2 inputs), and the critical points of a map change slowly.
        box: ``[(low, high), …]``, one pair per input coordinate; default: the bounding box of the
            probe inputs.
        probe_size: training samples whose bounding box is the default box (all ranks together);
            default 512, or the whole training set when smaller.
        starts: Sobol starting points of each search (default ``64·n``), plus the last critical points.
        max_iter: Newton iterations per search.
        degeneracy_tol: an input-Hessian eigenvalue with ``|λ| ≤ degeneracy_tol·max|λ|`` counts as zero.
        network: attribute path of the network to classify (``"net"``, ``"model.mlp"``); default:
            the module itself, or the only network it holds.
        figure: log a figure of the map and its critical points at each measurement (1-D and 2-D
            inputs, TensorBoard).
        input_fn: ``input_fn(batch) -> inputs`` for the default box; default: the batch, its first
            entry, or its ``"x"``/``"input"``/``"inputs"`` entry.
        forward_fn: ``forward_fn(pl_module, inputs) -> (N,)`` the scalar map; default
            ``pl_module(inputs)`` (one output per row).
        at_fit_end: measure once more when training ends.
        seed: seed of the Sobol scrambling and of the probe draw.
    """

    layout_category = "critical points of the input–output map (CriticalPoints)"
    cost_unit = "backward_passes"

    def layout(self) -> dict[str, list[str]]:
        n = self.dim or 0
        return {"critical points by Morse index (index_0: minima, index_n: maxima, between: saddles)":
                ["dyn/critical_points"] + [f"dyn/critical_points_index_{i}" for i in range(n + 1)]
                + ["dyn/critical_points_degenerate"],
                "critical points found, and how many the basins' hit counts suggest (Chao1; above: search "
                "incomplete)": ["dyn/critical_points", "dyn/critical_points_estimated"],
                "smallest ‖∇ₓf‖ on the box (≈ 0 at a critical point; > 0: the evidence that there is none)":
                ["dyn/critical_points_min_grad_norm"],
                "smallest |eigenvalue| of the input Hessian at a critical point (0: degenerate)":
                ["dyn/critical_points_min_abs_eigenvalue"]}

    def __init__(
        self,
        *,
        every_n_steps: int = 100,
        box: Optional[Sequence[Sequence[float]]] = None,
        probe_size: Optional[int] = None,
        starts: Optional[int] = None,
        max_iter: int = 40,
        degeneracy_tol: float = 1e-6,
        network: Optional[str] = None,
        figure: bool = True,
        input_fn: Optional[InputFn] = None,
        forward_fn: Optional[ForwardFn] = None,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        check_positive_int("probe_size", probe_size, optional=True)
        check_positive_int("starts", starts, optional=True)
        check_positive_int("max_iter", max_iter)
        check_tolerance("degeneracy_tol", degeneracy_tol)
        if box is not None:
            b = np.asarray(box, dtype=float)
            if b.ndim != 2 or b.shape[1] != 2 or not b.shape[0] or not np.all(b[:, 1] > b[:, 0]):
                raise ConfigurationError(f"`box` must be a list of (low, high) pairs with low < high, one per input "
                                         f"coordinate; got {box!r}")
        if not isinstance(figure, bool):
            raise ConfigurationError(f"`figure` must be a bool, got {figure!r}")
        self.box = None if box is None else [tuple(map(float, pair)) for pair in box]
        self.probe_size, self.starts, self.max_iter, self.degeneracy_tol = probe_size, starts, max_iter, degeneracy_tol
        self.network, self.figure, self.forward_fn = network, figure, forward_fn
        self.input_fn = input_fn or functools.partial(batch_inputs, owner="CriticalPoints")
        self.dim: Optional[int] = None
        self.function_class: Optional[FunctionClass] = None
        self.previous: Optional[torch.Tensor] = None
        #: the last search (a ``CriticalPointSearch``: points, indices, eigenvalues, certificates)
        self.last_search: Optional[CriticalPointSearch] = None
        #: the case last written as text (a case changes when training makes a weight rank-deficient)
        self._written_case: Optional[str] = None

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        if any(type(p).__name__ == "DTensor" for p in pl_module.parameters()):
            raise ConfigurationError("CriticalPoints needs the whole model on each process (a map of a few inputs "
                                     "fits on one device): its parameters are sharded DTensors")
        if self.box is None:
            batches = probe_set(trainer, pl_module, self.probe_size, seed=self.seed, default_size=512,
                                owner="CriticalPoints").all_batches()
            inputs = torch.cat([self.input_fn(b) for b in batches]).detach()
            if not inputs.is_floating_point() or inputs.dim() != 2:
                raise ConfigurationError(f"CriticalPoints needs vector inputs (batch, n) of floating point, got "
                                         f"{inputs.dtype} of shape {tuple(inputs.shape)}: pass box= and forward_fn")
            low, high = inputs.min(dim=0).values, inputs.max(dim=0).values
            self.box = [(float(a), float(b) if b > a else float(a) + 1.0) for a, b in zip(low, high)]
        self.dim = len(self.box)
        if self.dim > 16:
            starts = self.starts or 64 * self.dim
            rank_zero_warn(f"CriticalPoints on {self.dim} inputs: each search costs about "
                           f"{self.max_iter * (self.dim + 2)} passes over {starts} points (one Hessian row per input); "
                           "it is meant for maps of a few inputs — a forward_fn can restrict the model to a plane "
                           "or line through the data")
        pl_module.eval()  # restored by the hygiene around prepare()
        probe = torch.tensor([[(a + b) / 2 for a, b in self.box]] * 2, dtype=pl_module.dtype,
                             device=pl_module.device)
        try:
            with torch.no_grad():
                out = self._map(pl_module)(probe)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ConfigurationError(f"CriticalPoints could not evaluate the model on {self.dim}-dimensional inputs "
                                     f"(the box has {self.dim} coordinates): {err}") from err
        if not isinstance(out, torch.Tensor) or out.shape[0] != 2 or out[0].numel() != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigurationError(f"CriticalPoints needs a scalar map, one output per input row; the model gives "
                                     f"{shape}: pass forward_fn(pl_module, x) -> (N,) (one output, a logit, a "
                                     "class probability)")
        self.function_class = classify_architecture(self._network(pl_module))

    def _network(self, pl_module: nn.Module) -> nn.Module:
        if self.network is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.network)
        except AttributeError as err:
            raise ConfigurationError(f"CriticalPoints: `network` {self.network!r} is not a submodule of "
                                     f"{type(pl_module).__name__}") from err

    def _map(self, pl_module: nn.Module) -> nn.Module:
        return pl_module if self.forward_fn is None else _Forward(pl_module, self.forward_fn)

    # -- measurement -------------------------------------------------------------------------------
    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        assert self.box is not None and self.dim is not None
        pl_module.eval()  # the function the model computes at inference (restored after)
        result = find_critical_points(self._map(pl_module), self.box, starts=self.starts, init=self.previous,
                                      max_iter=self.max_iter, degeneracy_tol=self.degeneracy_tol, seed=self.seed)
        self.previous, self.last_search = result.points, result
        self.function_class = classify_architecture(self._network(pl_module))  # with the current weights' ranks
        scalars = {"dyn/critical_points": float(result.count), "dyn/critical_points_estimated": result.estimated_count,
                   "dyn/critical_points_degenerate": float(result.degenerate.sum()),
                   "dyn/critical_points_min_grad_norm": result.min_grad_norm}
        scalars.update({f"dyn/critical_points_index_{i}": float(c) for i, c in result.counts_by_index().items()})
        if result.count:
            scalars["dyn/critical_points_min_abs_eigenvalue"] = float(result.smallest_abs_eigenvalue.min())
        return Measurement(scalars, hvps=result.backward_passes, extra={"result": result})

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        writer = self.tensorboard(trainer)
        if writer is None:
            return
        assert self.box is not None and self.function_class is not None
        if self.function_class.case != self._written_case:
            writer.add_text("dyn/function_class", f"step {step}: **{self.function_class.case.replace('_', ' ')}** — "
                            f"{self.function_class.reason}", step)
            self._written_case = self.function_class.case
        if not self.figure or self.dim not in (1, 2):
            return
        search = result.extra["result"]
        axes = [np.linspace(a, b, 200 if self.dim == 1 else 60) for a, b in self.box]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.dim)
        with self.hygiene(pl_module), torch.no_grad():
            pl_module.eval()
            x = torch.as_tensor(mesh, dtype=pl_module.dtype, device=pl_module.device)
            values = self._map(pl_module)(x).reshape(-1).double().cpu().numpy()
        values = values.reshape([len(a) for a in axes])
        add_figure(writer, "dyn/critical_points_map",
                   critical_points_figure(axes, values, search.points.numpy(), search.kinds, step=step,
                                          verdict=f"architecture: {self.function_class.headline}"), step)

    # -- state --------------------------------------------------------------------------------------
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        return {"previous": None if self.previous is None else self.previous.tolist()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        previous = state["previous"]
        self.previous = None if previous is None else torch.tensor(previous, dtype=torch.float64)

