"""Digraph measures: graph limits that survive sparsity, direction and unbounded degrees.

A graphon ``W(x, y)`` is the limit of *dense* graph sequences; sparse or hub-dominated sequences
(a ring where every node listens to one neighbour, a power-law network) converge to the zero
graphon, and a mean-field equation on it has no coupling at all. A **digraph measure**
(Kuehn & Xu, *Vlasov equations on digraph measures*, JDE 339 (2022); graphops: Gkogkas, Kuehn et al.,
arXiv:2007.02868) keeps them: every vertex ``x ∈ [0, 1]`` carries a finite measure ``η_x`` on
``[0, 1]``, and the node at ``x`` receives from ``y`` with weight ``dη_x(y)``. The mean-field
(Vlasov) equation of a Kuramoto network on it is

    ∂_t f + ∂_θ[(ω + K ∫∫ sin(φ − θ) f(t, y, φ) dφ dη_x(y)) f] = D ∂²_θ f .

This module builds such measures from parts, each with the finite-``N`` sampling its limit needs:

* **absolutely continuous** ``dη_x(y) = W(x, y) dy`` (``DigraphMeasure.kernel``, ``.uniform``,
  ``.rank_one``, ``.power_law``, ``.translation_invariant``), bounded or not, directed or
  not. Node ``i`` sits at ``x_i``; the coupling matrix is ``C_ij = W(x_i, x_j)/N``
  (``sampling="deterministic"``) or ``C_ij = A_ij/(ρN)`` with ``A_ij ~ Bernoulli(min(1, ρW))``
  (``"random"``, a W-random graph of edge density ``ρ``; ``ρ → 0`` with ``ρN → ∞`` gives sparse
  graphs with unbounded kernels, Bollobás, Janson & Riordan 2007; Borgs et al. 2019);
* **atomic** ``η_x = w·δ_{x+a}`` (``DigraphMeasure.shift``) and rings of lattice neighbours
  ``x + s/N`` (``DigraphMeasure.ring``): every node listens to the node(s) near ``x + a``, with weight ``w`` — *not*
  ``w/N``: the degree stays bounded, so the ``1/N`` of a graphon would make the coupling vanish.
  With ``atom_width=m`` the atom is spread over ``m`` consecutive nodes of weight ``w/m`` (a sparse
  graph whose mean field is the atom's for large ``m``);
* **sums** ``η + η'`` and multiples ``c·η`` of these.

The kernel operator ``(Tf)(x) = ∫ f(y) dη_x(y)`` decides the incoherent state's stability;
:meth:`DigraphMeasure.top_eigenvalue` computes its eigenvalue of largest real part by Nyström's
method on a mesh graded towards a kernel singularity at 0 (:meth:`DigraphMeasure.discretize`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class KernelPart:
    """``dη_x(y) = weight·W(x, y) dy``.

    ``singularity``: the order ``α`` of a blow-up ``~ x^{−α}`` (or ``y^{−α}``) at 0, which grades the
    quadrature mesh. ``profile``: for a translation-invariant kernel ``W(x, y) = w((y − x) mod 1)``
    the function ``w`` (twisted states need it). ``constant``: ``W`` is this constant (all-to-all,
    uniform), which lets networks use the O(N) mean instead of a matrix.
    """

    W: Kernel
    weight: float = 1.0
    symmetric: bool = True
    singularity: float = 0.0
    profile: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    constant: Optional[float] = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.broadcast_to(self.W(x, y).to(torch.float64), torch.broadcast_shapes(x.shape, y.shape))


@dataclass(frozen=True)
class AtomPart:
    """``η_x = weight·δ_{x+offset}`` on the circle ``[0, 1)``; ``lattice=True``: the offset is
    ``steps/N`` on an ``N``-node network (a lattice neighbour; 0 in the limit)."""

    offset: float
    weight: float = 1.0
    lattice: bool = False

    def fraction(self, num_nodes: Optional[int]) -> float:
        if not self.lattice:
            return self.offset
        return 0.0 if num_nodes is None else self.offset / num_nodes


@dataclass(frozen=True)
class Discretization:
    """Nyström's discretization of ``T``: ``(Tf)(x_i) ≈ Σ_j matrix[i, j] f(x_j)``; ``weights`` are
    the quadrature weights (``∫ f ≈ Σ_j weights[j] f(x_j)``)."""

    nodes: torch.Tensor
    weights: torch.Tensor
    matrix: torch.Tensor


@dataclass(frozen=True)
class SampledNetwork:
    """A finite network sampled from a digraph measure: ``coupling[i, j]`` is the weight of ``j → i``
    already normalised for the limit (use it with ``normalization="sum"``); ``positions`` the ``x_i``."""

    coupling: torch.Tensor
    positions: torch.Tensor


def grid_positions(num_nodes: int) -> torch.Tensor:
    """The midpoint grid ``x_i = (i + ½)/N``."""
    return (torch.arange(num_nodes, dtype=torch.float64) + 0.5) / num_nodes


class DigraphMeasure:
    """``x ↦ η_x``: a sum of kernel parts and atoms.

    Build one with the constructors (:meth:`kernel`, :meth:`uniform`, :meth:`rank_one`,
    :meth:`power_law`, :meth:`translation_invariant`, :meth:`shift`, :meth:`ring`) and combine with
    ``+`` and scalar ``*``; :meth:`sample` gives finite networks, :meth:`top_eigenvalue` the kernel
    operator's ``μ_max``.
    """

    def __init__(self, kernels: Sequence[KernelPart] = (), atoms: Sequence[AtomPart] = ()) -> None:
        self.kernels = tuple(kernels)
        self.atoms = tuple(atoms)
        if not self.kernels and not self.atoms:
            raise ValueError("a digraph measure needs at least one kernel or atom")

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def kernel(cls, W: Kernel, *, symmetric: Optional[bool] = None, singularity: float = 0.0) -> DigraphMeasure:
        """``dη_x(y) = W(x, y) dy`` for a function ``W`` of two broadcastable tensors (a graphon, or an
        unbounded kernel with ``singularity=α`` for a blow-up ``~x^{−α}`` at 0). ``symmetric=None``
        checks ``W`` on a 64-point grid."""
        if symmetric is None:
            s = grid_positions(64)
            values = W(s[:, None], s[None, :]).to(torch.float64)
            symmetric = bool(torch.allclose(values, values.T, rtol=1e-12, atol=1e-12))
        return cls([KernelPart(W, symmetric=symmetric, singularity=float(singularity))])

    @classmethod
    def uniform(cls, p: float = 1.0) -> DigraphMeasure:
        """``dη_x = p·dy``: all-to-all (``p = 1``) or the limit of Erdős–Rényi graphs of edge probability ``p``."""
        if not p > 0:
            raise ValueError(f"p must be positive, got {p!r}")
        return cls([KernelPart(lambda x, y: torch.ones(torch.broadcast_shapes(x.shape, y.shape), dtype=torch.float64),
                                          weight=float(p), profile=lambda d: torch.ones_like(d), constant=1.0)])

    @classmethod
    def rank_one(cls, f: Callable[[torch.Tensor], torch.Tensor], g: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, *,
                 singularity: float = 0.0) -> DigraphMeasure:
        """``W(x, y) = f(x) g(y)`` (``g = f`` if omitted): ``μ_max = ⟨f, g⟩``."""
        gg = f if g is None else g
        return cls([KernelPart(lambda x, y: f(x) * gg(y), symmetric=g is None, singularity=float(singularity))])

    @classmethod
    def power_law(cls, alpha: float) -> DigraphMeasure:
        """``W(x, y) = x^{−α} y^{−α}`` (``0 ≤ α < ½``): node degrees ``∝ x^{−α}``, a heavy-tailed,
        hub-dominated network (Chung–Lu type); ``μ_max = 1/(1 − 2α)``."""
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 1/2), got {alpha!r}")
        return cls.rank_one(lambda x: x ** (-alpha), singularity=alpha)

    @classmethod
    def translation_invariant(cls, profile: Callable[[torch.Tensor], torch.Tensor]) -> DigraphMeasure:
        """``W(x, y) = w((y − x) mod 1)`` on the circle (directed unless ``w(d) = w(1 − d)``)."""
        d = grid_positions(64)
        symmetric = bool(torch.allclose(profile(d).to(torch.float64), profile(1 - d).to(torch.float64), rtol=1e-12, atol=1e-12))
        return cls([KernelPart(lambda x, y: profile((y - x) % 1.0), symmetric=symmetric, profile=profile)])

    @classmethod
    def shift(cls, a: float, weight: float = 1.0) -> DigraphMeasure:
        """``η_x = w·δ_{x+a}`` on the circle: the node at ``x`` listens to the node at ``x + a``."""
        if not 0 <= a < 1:
            raise ValueError(f"the shift a must be in [0, 1), got {a!r}")
        return cls(atoms=[AtomPart(float(a), float(weight))])

    @classmethod
    def ring(cls, neighbours: int = 1, *, directed: bool = True, weight: float = 1.0) -> DigraphMeasure:
        """The ring where node ``i`` listens to ``i+1, …, i+k`` (``directed``) or ``i±1, …, i±k``, each with
        weight ``w`` (sum over neighbours, bounded degree). Offsets are ``s/N``: the limit is ``k·w·δ_x``
        (``2k·w·δ_x`` undirected), while the graphon limit of the same sequence is zero."""
        if not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"neighbours must be a positive integer, got {neighbours!r}")
        steps = list(range(1, neighbours + 1)) + ([] if directed else [-s for s in range(1, neighbours + 1)])
        return cls(atoms=[AtomPart(float(s), float(weight), lattice=True) for s in steps])

    # -- algebra -------------------------------------------------------------------------------
    def __add__(self, other: "DigraphMeasure") -> "DigraphMeasure":
        if not isinstance(other, DigraphMeasure):
            return NotImplemented
        return DigraphMeasure(self.kernels + other.kernels, self.atoms + other.atoms)

    def __mul__(self, c: float) -> "DigraphMeasure":
        c = float(c)
        return DigraphMeasure([replace(k, weight=k.weight * c) for k in self.kernels],
                              [replace(a, weight=a.weight * c) for a in self.atoms])

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"DigraphMeasure({len(self.kernels)} kernel part(s), {len(self.atoms)} atom(s))"

    @property
    def symmetric(self) -> bool:
        """``W(x, y) = W(y, x)`` for every part and no atoms (atoms are directed unless paired)."""
        return all(k.symmetric for k in self.kernels) and not self.atoms

    @property
    def is_translation_invariant(self) -> bool:
        return all(k.profile is not None for k in self.kernels)

    @property
    def all_to_all_weight(self) -> Optional[float]:
        """``c`` when the measure is ``c·dy`` (all-to-all coupling of strength ``c``), else ``None``."""
        if self.atoms or any(k.constant is None for k in self.kernels):
            return None
        return sum(k.weight * k.constant for k in self.kernels)

    @property
    def singularity(self) -> float:
        return max((k.singularity for k in self.kernels), default=0.0)

    def density(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The absolutely continuous part's density ``Σ weight·W(x, y)``."""
        return sum(k(x, y) for k in self.kernels) if self.kernels else torch.zeros(torch.broadcast_shapes(x.shape, y.shape), dtype=torch.float64)

    # -- the kernel operator -------------------------------------------------------------------
    def discretize(self, num_points: int = 2000, *, grading: Optional[float] = None) -> Discretization:
        """Nyström's method on ``x_i = s_i^p`` (``s_i`` the midpoint grid, quadrature weights
        ``p s_i^{p−1}/n``). ``p = grading`` or, by default, ``max(1, 1/(1 − 2α))`` for a kernel
        singularity of order ``α`` at 0: then ``x^{−2α} dx = p ds``, so products of two such
        singular factors are integrated as smooth functions of ``s`` (midpoint error O(n⁻²) instead
        of O(n^{2α−1})). Atoms are interpolated linearly on
        the circle (exact on the uniform mesh when ``offset·n`` is an integer); lattice neighbours are
        at offset 0 in the limit."""
        if not isinstance(num_points, int) or num_points < 2:
            raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}")
        alpha = self.singularity
        if not alpha < 0.5:
            raise ValueError(f"a kernel singularity of order {alpha} >= 1/2 is not square integrable")
        p = float(grading) if grading is not None else max(1.0, 1.0 / (1.0 - 2.0 * alpha)) if alpha > 0 else 1.0
        s = grid_positions(num_points)
        nodes = s**p
        weights = p * s ** (p - 1) / num_points
        matrix = self.density(nodes[:, None], nodes[None, :]) * weights[None, :]
        for atom in self.atoms:
            matrix = matrix + atom.weight * _periodic_interpolation(nodes, (nodes + atom.fraction(None)) % 1.0)
        return Discretization(nodes, weights, matrix)

    def top_eigenvalue(self, num_points: int = 2000, *, grading: Optional[float] = None) -> float:
        """``μ_max``: the real part of the eigenvalue of ``T`` with the largest real part, by
        :meth:`discretize` — a symmetric eigenproblem (``Q^{1/2} W Q^{1/2}``, ``Q`` the quadrature
        weights) for symmetric kernels without atoms, Arnoldi's rightmost eigenvalues otherwise."""
        d = self.discretize(num_points, grading=grading)
        if self.symmetric:
            root = torch.sqrt(d.weights)
            sym = (d.matrix / d.weights[None, :]) * root[:, None] * root[None, :]
            sym = 0.5 * (sym + sym.T)
            return float(scipy.linalg.eigvalsh(sym.numpy(), subset_by_index=[num_points - 1, num_points - 1])[0])
        matrix = d.matrix.numpy()
        if num_points > 500:  # Arnoldi for the rightmost eigenvalues; dense QR (O(n³)) as the fallback
            try:
                values = scipy.sparse.linalg.eigs(matrix, k=6, which="LR", return_eigenvectors=False, tol=1e-12)
                return float(np.max(values.real))
            except scipy.sparse.linalg.ArpackNoConvergence:
                pass
        return float(np.max(np.linalg.eigvals(matrix).real))

    # -- finite networks -----------------------------------------------------------------------
    def sample(
        self,
        num_nodes: int,
        *,
        sampling: Literal["deterministic", "random"] = "deterministic",
        density: float = 1.0,
        positions: Literal["grid", "uniform"] = "grid",
        atom_width: int = 1,
        sparse: bool = False,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float64,
        block_size: int = 1 << 22,
    ) -> SampledNetwork:
        """An ``N``-node network whose coupling converges to this measure.

        Args:
            num_nodes: ``N``.
            sampling: kernel parts as weights ``W(x_i, x_j)/N`` (``"deterministic"``) or as a W-random
                graph ``Bernoulli(min(1, ρW(x_i, x_j)))/(ρN)`` (``"random"``; independent directions
                when the kernel is not symmetric).
            density: ``ρ`` of random sampling (edge density; ``ρN`` the mean degree scale).
            positions: ``x_i`` on the midpoint grid or uniform at random (atoms need the grid).
            atom_width: spread each atom over this many consecutive nodes around ``x + a`` (weight
                ``w/m`` each).
            sparse: a ``torch.sparse_csr`` matrix; kernel parts are generated ``block_size`` entries
                at a time, so memory is O(edges + block_size).
            generator: private generator for random positions and edges (default seed 0).
        """
        if not isinstance(num_nodes, int) or num_nodes < 2:
            raise ValueError(f"num_nodes must be an integer >= 2, got {num_nodes!r}")
        if sampling not in ("deterministic", "random"):
            raise ValueError(f"sampling must be 'deterministic' or 'random', got {sampling!r}")
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density!r}")
        if positions not in ("grid", "uniform"):
            raise ValueError(f"positions must be 'grid' or 'uniform', got {positions!r}")
        if not isinstance(atom_width, int) or not 1 <= atom_width <= num_nodes:
            raise ValueError(f"atom_width must be an integer in [1, N], got {atom_width!r}")
        if self.atoms and positions != "grid":
            raise ValueError("atoms connect lattice nodes: sample them with positions='grid'")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        n = num_nodes
        x = grid_positions(n) if positions == "grid" else torch.rand(n, generator=g, dtype=torch.float64)
        rows, cols, vals = [], [], []
        for part in self.kernels:
            r, c, v = _sample_kernel(part, x, sampling, density, g, block_size)
            rows.append(r), cols.append(c), vals.append(v)
        for atom in self.atoms:
            r, c, v = _sample_atom(atom, n, atom_width)
            rows.append(r), cols.append(c), vals.append(v)
        index = torch.stack((torch.cat(rows), torch.cat(cols)))
        C = torch.sparse_coo_tensor(index, torch.cat(vals), (n, n), check_invariants=True).coalesce()
        C = C.to_sparse_csr() if sparse else C.to_dense()
        return SampledNetwork(C.to(dtype), x)


def _periodic_interpolation(nodes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rows: linear interpolation weights of the values at ``nodes`` at ``targets`` on the circle."""
    n = nodes.numel()
    ext = torch.cat((nodes[-1:] - 1.0, nodes, nodes[:1] + 1.0))
    hi = torch.searchsorted(ext, targets, right=True).clamp(1, n + 1)
    lo = hi - 1
    t = (targets - ext[lo]) / (ext[hi] - ext[lo])
    P = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    P.index_put_((rows, (lo - 1) % n), 1 - t, accumulate=True)
    P.index_put_((rows, (hi - 1) % n), t, accumulate=True)
    return P


def _sample_kernel(part: KernelPart, x: torch.Tensor, sampling: str, density: float, g: torch.Generator,
                   block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = x.numel()
    step = max(1, block_size // n)
    rows, cols, vals = [], [], []
    for start in range(0, n, step):
        i = torch.arange(start, min(n, start + step))
        w = part(x[i][:, None], x[None, :])
        if not torch.isfinite(w).all() or (sampling == "random" and (w < 0).any()):
            raise ValueError("a kernel must be finite at the sampled positions (and non-negative to sample edges)")
        if sampling == "random":
            keep = torch.rand(w.shape, generator=g, dtype=torch.float64) < torch.clamp(density * w, max=1.0)
            if part.symmetric:
                keep &= i[:, None] < torch.arange(n)[None, :]  # the upper triangle, mirrored below
            value = torch.full_like(w, 1.0 / (density * n))
        else:
            keep = w != 0
            value = w / n
        keep &= i[:, None] != torch.arange(n)[None, :]
        r, c = keep.nonzero(as_tuple=True)
        rows.append(i[r]), cols.append(c), vals.append(value[r, c])
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    if sampling == "random" and part.symmetric:
        r, c, v = torch.cat((r, c)), torch.cat((c, r)), torch.cat((v, v))
    return r, c, v


def _sample_atom(atom: AtomPart, n: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    steps = atom.offset if atom.lattice else atom.offset * n
    if abs(steps - round(steps)) > 1e-9 * max(1.0, n):
        raise ValueError(f"the atom at x + {atom.offset} falls between the nodes of an {n}-node grid; "
                         f"choose N with offset·N an integer")
    i = torch.arange(n)
    first = -(width // 2)
    rows = i.repeat(width)
    cols = torch.cat([(i + int(round(steps)) + first + k) % n for k in range(width)])
    return rows, cols, torch.full((n * width,), atom.weight / width, dtype=torch.float64)


__all__ = ["AtomPart", "DigraphMeasure", "Discretization", "KernelPart", "SampledNetwork", "grid_positions"]
