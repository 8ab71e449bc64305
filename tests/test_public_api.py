"""Every public name imports, from the package and from each subpackage's ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import healthfed


@pytest.mark.parametrize("name", sorted(set(healthfed.__all__) - {"__version__"}))
def test_every_name_in_healthfed_all_imports(name: str) -> None:
    assert getattr(healthfed, name) is not None


def _modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(healthfed.__path__, prefix="healthfed.")
        if ".bundled" not in m.name and not m.name.endswith("__main__")
    )


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_and_its_all_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"


def test_the_node_side_imports_no_hub_side_libraries() -> None:
    """The data worker (executor + installed ClientApp, every computation registered)
    and the SuperNode entry import neither scikit-learn, scipy nor pandas: those serve
    the researcher's estimators and result tables and, lazily, a few audits (cold start
    pays per worker)."""
    import subprocess
    import sys

    code = (
        "import sys, healthfed.federation.deploy.__main__, healthfed.federation.deploy.executor, "
        "healthfed.federation.client_app, healthfed.compute\n"
        "from healthfed.compute import registered_computations\n"
        "assert 'glm_step' in registered_computations()\n"
        "print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
