"""The public surface: what the top level exports, what the README imports, modules that stay modules."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import types
from pathlib import Path

import lightning_dyn

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["lightning_dyn"] + [f"lightning_dyn.{m.name}" for m in pkgutil.iter_modules(lightning_dyn.__path__)
                                if m.ispkg]


def _readme_code() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_top_level_exports_exactly_its_surface():
    assert sorted(lightning_dyn.__all__) == sorted(
        ["CriticalPoints", "EdgeOfStability", "GradientExplosionMonitor", "HessianSettings", "HessianSharpness",
         "InstabilityWarning", "JacobianSpectrum",
         "SGDLyapunov", "ConfigurationError", "GradientExplosionError", "AugmentedNeuralODE", "KuramotoNetwork",
         "NeuralDDE", "NeuralODE", "classify_architecture", "ddeint", "find_critical_points", "jacobian_spectrum", "lyapunov_spectrum", "sgd_lyapunov"])
    for name in lightning_dyn.__all__:
        assert getattr(lightning_dyn, name) is not None
    assert issubclass(lightning_dyn.ConfigurationError, ValueError)


def test_the_version_is_the_distributions():
    assert lightning_dyn.__version__ == importlib.metadata.version("lightning-dyn")


def test_readme_examples_import_only_from_packages():
    """A README example never reaches into a module: everything it needs is exported by a package."""
    seen = 0
    for block in _readme_code():
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_dyn"):
                assert node.module in PACKAGES, f"README imports from the module {node.module}"
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert alias.name in module.__all__, f"{alias.name} is not in {node.module}.__all__"
                    seen += 1
    assert seen >= 20


def test_no_function_shadows_a_submodule():
    """``import lightning_dyn.x.y as m`` gives the module ``y`` for every submodule."""
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for sub in pkgutil.iter_modules(package.__path__):
            value = getattr(package, sub.name, None)
            importlib.import_module(f"{package_name}.{sub.name}")
            value = getattr(package, sub.name)
            assert isinstance(value, types.ModuleType), f"{package_name}.{sub.name} is a {type(value).__name__}"


def test_layers_import_downwards_only():
    """curvature ← dynamics ← callbacks; ensembles and sampling below both; models never import dynamics
    or callbacks; dynamics never imports models; function_classes (above models) only feeds callbacks."""
    forbidden = {"curvature": {"dynamics", "callbacks", "models", "data", "ensembles", "dde", "function_classes"},
                 "dynamics": {"callbacks", "models", "data", "function_classes"},
                 "ensembles": {"curvature", "dynamics", "callbacks", "models", "data", "dde", "function_classes"},
                 "dde": {"curvature", "dynamics", "callbacks", "models", "data", "ensembles", "function_classes"},
                 "models": {"callbacks", "dynamics", "function_classes"},
                 "function_classes": {"callbacks", "data", "curvature", "dynamics"}}
    for layer, banned in forbidden.items():
        for path in (ROOT / "lightning_dyn" / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    assert node.module.split(".")[0] not in banned, f"{path.name} imports {node.module}"


def test_the_readme_contributor_example_is_a_working_callback(tmp_path):
    """The README's "write your own callback" block, executed as written, on a real Trainer."""
    import lightning.pytorch as pl

    from lightning_dyn.data import DigitsDataModule
    from lightning_dyn.models import SquaredLossMLP

    block = next(b for b in _readme_code() if "class TopEigenvalue(DynamicsCallback)" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    callback = namespace["TopEigenvalue"](every_n_steps=4)
    trainer = pl.Trainer(max_steps=8, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(SquaredLossMLP(widths=(64, 16, 10)), DigitsDataModule(n=600))  # the example draws 512
    assert [h["step"] for h in callback.history] == [4, 8]
    assert all(h["dyn/top_eigenvalue"] > 0 and h["hvps"] > 0 for h in callback.history)
