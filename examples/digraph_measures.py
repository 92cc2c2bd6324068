"""Noisy Kuramoto networks on digraph measures: r against K beside K_c = 2D/μ_max and the Vlasov limit.

Four networks of identical oscillators with noise D — all-to-all, Erdős–Rényi, a power law
W = x^−α y^−α (hubs) and a sparse directed ring η_x = δ_{x+a} (each node listens to a few nodes
around x + a; the graphon limit of this sequence is zero) — sampled with the normalisation their
digraph-measure limit needs. For each, the time-averaged order parameter at K/K_c in the config
(one batched run, stochastic Heun), the threshold K_c = 2D/μ_max (μ_max the top eigenvalue of the
kernel operator) and the stationary r of the Vlasov (Fokker–Planck) limit. The ring is also run with
the graphon's 1/N normalisation, which loses the coupling. Then the finite network's r(t) against
its Vlasov limit for several N (power law, K = 1.5 K_c). Writes a PNG and TensorBoard scalars and
figure; prints the tables. 35 s on 2 CPU cores with configs/digraph_measures.yaml.

    python examples/digraph_measures.py [--config configs/digraph_measures.yaml]
    python -m tensorboard.main --logdir runs/digraph_measures
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from example_config import load_config, save_figure  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from lightning_dyn.dynamics import (VlasovKuramoto, kronecker_phases, noisy_critical_coupling,  # noqa: E402
                                    wrapped_cauchy_phases)
from lightning_dyn.ensembles import DigraphMeasure  # noqa: E402
from lightning_dyn.models import KuramotoNetwork, order_parameter, time_averaged_order_parameter  # noqa: E402

DEFAULTS = dict(num_nodes=2000, noise=0.5, couplings_over_kc=[0.5, 0.8, 0.9, 1.1, 1.25, 1.5, 2.0, 3.0],
                edge_probability=0.5, alpha=0.25, density=0.05, ring_shift=0.25, ring_width=50, t_end=40.0,
                step_size=0.05, vlasov_points=128, vlasov_modes=24, convergence_nodes=[250, 1000, 4000],
                out_dir="runs/digraph_measures")


TAGS = {"all-to-all": "all_to_all", "Erdős–Rényi": "erdos_renyi", "power law": "power_law",
        "directed ring": "directed_ring"}


def setups(cfg: dict) -> dict:
    """name → (measure, sampling keywords, normalisation)."""
    sparse = dict(sampling="random", density=cfg["density"], sparse=True)
    ring = DigraphMeasure.shift(cfg["ring_shift"])
    return {
        "all-to-all": (DigraphMeasure.uniform(), {}),
        "Erdős–Rényi": (DigraphMeasure.uniform(cfg["edge_probability"]), sparse),
        "power law": (DigraphMeasure.power_law(cfg["alpha"]), sparse),
        "directed ring": (ring, dict(atom_width=cfg["ring_width"], sparse=True)),
    }


def stationary_r(network: KuramotoNetwork, batch: int, cfg: dict, seed: int) -> list[float]:
    theta0 = kronecker_phases(torch.full((network.num_nodes,), 0.5, dtype=torch.complex128)).expand(batch, -1).clone()
    _, theta = network.simulate(theta0, (0.0, cfg["t_end"]), step_size=cfg["step_size"], method="heun", num_saves=201,
                                generator=torch.Generator().manual_seed(seed))
    return time_averaged_order_parameter(theta, burn_in=0.5).tolist()


def vlasov_r(measure: DigraphMeasure, couplings: torch.Tensor, cfg: dict) -> list[float]:
    limit = VlasovKuramoto(measure, couplings, cfg["noise"], num_points=cfg["vlasov_points"], num_modes=cfg["vlasov_modes"])
    solution = limit.simulate(limit.ott_antonsen(0.5), (0.0, cfg["t_end"]), num_saves=201)
    r = limit.order_parameter(solution.moments)
    return r[100:].mean(0).tolist()


def main() -> None:
    cfg = load_config(__doc__.splitlines()[0], DEFAULTS)
    out = Path(cfg["out_dir"])
    writer = SummaryWriter(str(out))
    n, D = cfg["num_nodes"], cfg["noise"]
    factors = torch.tensor(cfg["couplings_over_kc"], dtype=torch.float64)
    results = {}
    for seed, (name, (measure, sampling)) in enumerate(setups(cfg).items()):
        kc = noisy_critical_coupling(D, measure)
        K = factors * kc
        net = KuramotoNetwork.on_digraph_measure(torch.zeros(n, dtype=torch.float64), K[:, None], measure, noise=D,
                                                 generator=torch.Generator().manual_seed(seed), **sampling)
        row = dict(kc=kc, K=K.tolist(), simulation=stationary_r(net, len(K), cfg, seed), vlasov=vlasov_r(measure, K, cfg))
        if name == "directed ring":  # the same graph under the graphon's 1/N: the coupling vanishes
            graphon_view = KuramotoNetwork(torch.zeros(n, dtype=torch.float64), K[:, None], net.coupling_operator.adjacency,
                                           noise=D)
            row["graphon normalisation"] = stationary_r(graphon_view, len(K), cfg, seed)
        results[name] = row
        print(f"\n{name}: K_c = 2D/μ_max = {kc:.4f}")
        print("(both time-averaged over the second half of [0, t_end], from r = 0.5)")
        print(f"{'K':>8} {'K/K_c':>6} {'r (N=' + str(n) + ')':>12} {'r Vlasov':>9}"
              + (f" {'r graphon 1/N':>14}" if "graphon normalisation" in row else ""))
        for i, k in enumerate(row["K"]):
            extra = f" {row['graphon normalisation'][i]:14.4f}" if "graphon normalisation" in row else ""
            print(f"{k:8.4f} {float(factors[i]):6.2f} {row['simulation'][i]:12.4f} {row['vlasov'][i]:9.4f}{extra}")
            # the step is K/K_c in per cent, so TensorBoard's axis reads as the figure's
            writer.add_scalars(f"digraph/{TAGS[name]}", {"simulation": row["simulation"][i], "vlasov": row["vlasov"][i]},
                               global_step=int(round(100 * float(factors[i]))))

    # finite N against the Vlasov limit: power law at K = 1.5 K_c, from z1 = 0.3
    measure = DigraphMeasure.power_law(cfg["alpha"])
    K = 1.5 * noisy_critical_coupling(D, measure)
    limit = VlasovKuramoto(measure, K, D, num_points=cfg["vlasov_points"], num_modes=cfg["vlasov_modes"])
    t_conv = 10.0
    solution = limit.simulate(limit.ott_antonsen(0.3), (0.0, t_conv), num_saves=101)
    r_limit = limit.order_parameter(solution.moments)
    curves = {}
    print(f"\npower law α = {cfg['alpha']}, K = 1.5 K_c: sup_t |r_N(t) − r(t)| against the Vlasov limit")
    for nodes in cfg["convergence_nodes"]:
        g = torch.Generator().manual_seed(nodes)
        net = KuramotoNetwork.on_digraph_measure(torch.zeros(nodes, dtype=torch.float64), K, measure, noise=D,
                                                 sampling="random", density=cfg["density"], sparse=True, generator=g)
        theta0 = wrapped_cauchy_phases(torch.full((nodes,), 0.3, dtype=torch.complex128), generator=g)
        _, theta = net.simulate(theta0, (0.0, t_conv), step_size=cfg["step_size"] / 2, method="heun", num_saves=101,
                                generator=g)
        curves[nodes] = order_parameter(theta)
        print(f"  N = {nodes:5d}: {float((curves[nodes] - r_limit).abs().max()):.4f}")
    for i in range(len(solution.times)):  # the step is 10·t
        writer.add_scalars("digraph/finite_n_vs_vlasov",
                           {"vlasov": float(r_limit[i]), **{f"N={m}": float(c[i]) for m, c in curves.items()}},
                           global_step=int(round(10 * float(solution.times[i]))))

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, row), color in zip(results.items(), ("C0", "C1", "C2", "C3")):
        left.plot(factors, row["simulation"], "o", color=color, label=f"{name} (N = {n})")
        left.plot(factors, row["vlasov"], "-", color=color, alpha=0.7, label=f"{name}, Vlasov limit")
        if "graphon normalisation" in row:
            left.plot(factors, row["graphon normalisation"], "x", color=color, label=f"{name}, graphon 1/N")
    left.axvline(1.0, ls=":", color="gray")
    left.set_xlabel("K / K_c   (K_c = 2D/μ_max of each network)")
    left.set_ylabel("time-averaged order parameter r")
    left.set_title(f"noisy identical oscillators, D = {D}")
    left.legend(fontsize=7)
    for nodes, curve in curves.items():
        right.plot(solution.times, curve, lw=1, label=f"N = {nodes}")
    right.plot(solution.times, r_limit, "k-", lw=2, label="Vlasov limit")
    right.set_xlabel("t")
    right.set_ylabel("order parameter r(t)")
    right.set_title(f"power law α = {cfg['alpha']}, K = 1.5 K_c: finite N → limit")
    right.legend(fontsize=8)
    save_figure(fig, writer, out, "digraph_measures.png", "digraph/summary")


if __name__ == "__main__":
    main()
