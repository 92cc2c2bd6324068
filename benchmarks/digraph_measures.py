"""Mean field on digraph measures: thresholds, the Vlasov limit, twisted states — measured against closed forms.

    python benchmarks/digraph_measures.py [--quick] [--json results.json]

Protocol (fixed before any tuning; ``--quick`` shrinks seeds and sizes for a smoke run):

1. Noisy identical oscillators, D = 1. For each network, K_c is measured from simulations: the growth
   rate σ of the projected order parameter from incoherence (``incoherence_growth_rate``: amplitude
   0.1, 128 noise realisations, stochastic Heun Δt = 0.02, fit over t ∈ [0, 2]) at K = 0.8 and
   1.2 × the formula, and K_c where the line through the two rates crosses 0. N = 2000 (seeds 0–2,
   graph and noise) and N = 8000 (seed 0); sparse samples with edge density 100/N. Formula:
   K_c = 2D/μ_max.
2. The Vlasov (Fokker–Planck) limit on the same measures: 128 Nyström nodes, 16 circular moments,
   the same two-point growth-rate fit over t ∈ [1, 4] from z₁ = 0.01.
3. Convergence of the finite network to its limit: power law α = 0.25 sampled as a sparse W-random
   graph (density 0.05), K = 1.5 K_c, z₁(0) = 0.3 (i.i.d. wrapped-Cauchy phases), t ∈ [0, 5];
   error = sup_t |r_N(t) − r(t)| against the Vlasov r(t), root mean square over 8 realisations
   (graph, phases, noise), N = 250 … 8000; the slope of log error against log N.
4. Twisted states of the directed ring (node i listens to i + 1), N = 40, K = 1, ω = 0.3: every
   q ∈ (−20, 20]; Ω from the unperturbed run against ω + K sin(2πq/N), stability from the growth of
   a 1e-6 perturbation over t = 50 (ratio of norms) against cos(2πq/N) > 0. And the fixed shift
   a = 1/8 (q = 1): Ω on N = 40 … 4000 nodes under the digraph-measure normalisation and under the
   graphon's 1/N, against ω + K sin(2πqa) and the graphon limit's ω.
5. The firing-rate pitchfork on the power law α = 0.25: growth rate of u from u = 10⁻³ at gains
   0.9 and 1.1 × 1/μ_max (N = 2000, deterministic sample), zero crossing against 1/μ_max = 0.5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torchdiffeq import odeint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn.dynamics import (VlasovKuramoto, critical_coupling_from_rates, critical_gain,  # noqa: E402
                                    exponential_rate, incoherence_growth_rate, noisy_critical_coupling,
                                    twisted_state, wrapped_cauchy_phases)
from lightning_dyn.ensembles import DigraphMeasure, grid_positions  # noqa: E402
from lightning_dyn.models import FiringRateNetwork, KuramotoNetwork, order_parameter  # noqa: E402

D = 1.0


def networks(n: int):
    """(name, measure, left eigenfunction ψ at the nodes or None, sampling keywords); the sparse
    samples have edge density ρ = 100/N (mean degree 100·∫∫W)."""
    x = grid_positions(n)
    sparse = dict(sampling="random", density=min(1.0, 100 / n), sparse=True)
    return [
        ("all-to-all", DigraphMeasure.uniform(), None, {}),
        ("Erdős–Rényi p=0.5 (sparse)", DigraphMeasure.uniform(0.5), None, sparse),
        ("power law α=0.25 (sparse)", DigraphMeasure.power_law(0.25), x**-0.25, sparse),
        ("directed rank one (1+x)(2−y)", DigraphMeasure.rank_one(lambda s: 1 + s, lambda s: 2 - s), 2 - x, sparse),
        ("directed ring δ_{x+1/4}, m=50", DigraphMeasure.shift(0.25), None, dict(atom_width=50, sparse=True)),
    ]


def thresholds(plan):
    rows = []
    for n, seeds in plan:
        for name, measure, psi, sampling in networks(n):
            kc = noisy_critical_coupling(D, measure)
            estimates = []
            start = time.perf_counter()
            for seed in seeds:
                rates = []
                for factor in (0.8, 1.2):
                    net = KuramotoNetwork.on_digraph_measure(torch.zeros(n, dtype=torch.float64), factor * kc, measure,
                                                             noise=D, generator=torch.Generator().manual_seed(seed),
                                                             **sampling)
                    rates.append(incoherence_growth_rate(net, profile=psi,
                                                         generator=torch.Generator().manual_seed(100 + seed)))
                estimates.append(critical_coupling_from_rates([0.8 * kc, 1.2 * kc], rates))
            errors = [e / kc - 1 for e in estimates]
            rows.append(dict(network=name, nodes=n, formula=kc, estimates=estimates, errors=errors,
                             seconds=time.perf_counter() - start))
            print(f"{name:38s} N={n:5d}  K_c formula {kc:.4f}  measured " + " ".join(f"{e:.4f}" for e in estimates)
                  + f"  errors " + " ".join(f"{100 * e:+.2f}%" for e in errors) + f"  ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
    return rows


def vlasov_thresholds():
    rows = []
    for name, measure, _, _ in networks(128):
        kc = noisy_critical_coupling(D, measure)
        v = VlasovKuramoto(measure, torch.tensor([0.8 * kc, 1.2 * kc], dtype=torch.float64), D, num_points=128, num_modes=16)
        nodes = v.nodes
        psi = {"power": nodes**-0.25, "directed rank": 2 - nodes}
        profile = next((p for key, p in psi.items() if name.startswith(key)), None)
        sol = v.simulate(v.ott_antonsen(0.01), (0.0, 4.0), num_saves=41)
        a = v.order_parameter(sol.moments, profile)
        keep = sol.times >= 1
        est = critical_coupling_from_rates([0.8 * kc, 1.2 * kc], exponential_rate(sol.times[keep], a[keep]))
        rows.append(dict(network=name, formula=kc, vlasov=est, error=est / kc - 1))
        print(f"Vlasov  {name.split(' (')[0]:38s} K_c formula {kc:.5f}  limit {est:.5f}  error {100 * (est / kc - 1):+.3f}%")
    return rows


def convergence(sizes, realisations):
    measure = DigraphMeasure.power_law(0.25)
    kc = noisy_critical_coupling(D, measure)
    K, t_end, saves = 1.5 * kc, 5.0, 51
    v = VlasovKuramoto(measure, K, D, num_points=256, num_modes=24)
    limit = v.order_parameter(v.simulate(v.ott_antonsen(0.3), (0.0, t_end), num_saves=saves).moments)
    rows = []
    for n in sizes:
        errs = []
        for seed in range(realisations):
            g = torch.Generator().manual_seed(seed)
            net = KuramotoNetwork.on_digraph_measure(torch.zeros(n, dtype=torch.float64), K, measure, noise=D,
                                                     sampling="random", density=0.05, sparse=True, generator=g)
            theta0 = wrapped_cauchy_phases(torch.full((n,), 0.3, dtype=torch.complex128), generator=g)
            _, theta = net.simulate(theta0, (0.0, t_end), step_size=0.02, method="heun", num_saves=saves, generator=g)
            errs.append(float((order_parameter(theta) - limit).abs().max()))
        rms = math.sqrt(sum(e * e for e in errs) / len(errs))
        rows.append(dict(nodes=n, rms_error=rms))
        print(f"finite N vs Vlasov  N={n:5d}  rms sup_t |r_N − r| = {rms:.4f}   (r(5) limit {float(limit[-1]):.4f})", flush=True)
    # error ∝ N^s: the slope of log error against log N is exponential_rate's fit with t = log N
    slope = float(exponential_rate(torch.tensor([math.log(r["nodes"]) for r in rows], dtype=torch.float64),
                                   torch.tensor([r["rms_error"] for r in rows], dtype=torch.float64)))
    print(f"convergence rate: error ∝ N^{slope:.3f}  (random sampling: N^-0.5 expected)")
    return dict(rows=rows, slope=slope)


def twisted(n=40, K=1.0, omega=0.3):
    ring = DigraphMeasure.ring(1)
    net = KuramotoNetwork.on_digraph_measure(torch.full((n,), omega, dtype=torch.float64), K, ring)
    x = torch.arange(n, dtype=torch.float64) / n
    qs = list(range(-n // 2 + 1, n // 2 + 1))
    theta0 = torch.stack([2 * math.pi * q * x for q in qs])
    pert = 1e-6 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, clean = net.simulate(theta0, (0.0, 10.0), step_size=0.01, num_saves=2)
    _, perturbed = net.simulate(theta0 + pert, (0.0, 50.0), step_size=0.01, num_saves=2)
    measured_omega = ((clean[-1] - clean[0]) / 10.0).mean(-1)
    dev0 = pert - pert.mean(-1, keepdim=True)
    dev = perturbed[-1] - clean[0]
    ratio = (dev - dev.mean(-1, keepdim=True)).norm(dim=-1) / dev0.norm(dim=-1)
    worst, agree = 0.0, 0
    for i, q in enumerate(qs):
        theory = twisted_state(ring, q, K, frequency=omega, num_nodes=n)
        worst = max(worst, abs(float(measured_omega[i]) - theory.frequency))
        seen = "stable" if ratio[i] < 1 - 1e-3 else "unstable" if ratio[i] > 1 + 1e-3 else "neutral"
        agree += seen == theory.stability
    stable = [q for i, q in enumerate(qs) if ratio[i] < 1 - 1e-3]
    print(f"directed ring N={n}: Ω max error {worst:.1e}; stability verdicts agree {agree}/{len(qs)}; "
          f"stable q: {min(stable)}…{max(stable)} (theory |q| < N/4 = {n // 4})")
    shift_rows = []
    for nodes in (40, 400, 4000):
        A = DigraphMeasure.shift(0.125).sample(nodes).coupling.to_sparse_csr()
        theta0 = 2 * math.pi * grid_positions(nodes)
        rates = {}
        for norm in ("sum", "mean"):
            net = KuramotoNetwork(torch.full((nodes,), omega, dtype=torch.float64), K, A, normalization=norm)
            _, th = net.simulate(theta0, (0.0, 10.0), step_size=0.01, num_saves=2)
            rates[norm] = float(((th[-1] - th[0]) / 10.0).mean())
        shift_rows.append(dict(nodes=nodes, measure=rates["sum"], graphon=rates["mean"]))
        print(f"shift a=1/8, q=1, N={nodes:5d}: Ω digraph-measure normalisation {rates['sum']:.8f} "
              f"(limit ω + K sin(2πqa) = {omega + K * math.sin(math.pi / 4):.8f}); graphon 1/N {rates['mean']:.8f} "
              f"(graphon limit ω = {omega})")
    return dict(omega_max_error=worst, verdicts_agree=agree, modes=len(qs), stable_range=[min(stable), max(stable)],
                shift=shift_rows)


def pitchfork(n=2000):
    measure = DigraphMeasure.power_law(0.25)
    gc = critical_gain(measure)
    gains = torch.tensor([[0.9 * gc], [1.1 * gc]], dtype=torch.float64)
    net = FiringRateNetwork.on_digraph_measure(n, measure, gain=gains)
    t = torch.linspace(0, 5, 26, dtype=torch.float64)
    u = odeint(net, torch.full((2, n), 1e-3, dtype=torch.float64), t, method="rk4", options={"step_size": 0.02})
    amp = (u * grid_positions(n) ** -0.25).mean(-1)  # projection on the top eigenfunction
    est = critical_coupling_from_rates([0.9 * gc, 1.1 * gc], exponential_rate(t[5:], amp[5:]))
    print(f"firing-rate pitchfork, power law α=0.25, N={n}: gain 1/μ_max = {gc:.4f}, measured {est:.4f} "
          f"({100 * (est / gc - 1):+.2f}%)")
    return dict(formula=gc, measured=est, error=est / gc - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    results = dict(
        thresholds=thresholds([(2000, [0])] if args.quick else [(2000, [0, 1, 2]), (8000, [0])]),
        vlasov=vlasov_thresholds(),
        convergence=convergence([250, 1000] if args.quick else [250, 500, 1000, 2000, 4000, 8000], 2 if args.quick else 8),
        twisted=twisted(),
        pitchfork=pitchfork(),
    )
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
