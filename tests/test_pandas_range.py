"""The pandas range healthfed declares is the one `make test` runs.

`make test` runs the whole suite with the pandas the test extra resolves, then a
pandas-compat set with the newest pandas (a fresh install's, 3.x) and with the oldest
one `pyproject.toml` declares, each put first on PYTHONPATH
(``HEALTHFED_PANDAS_UNDER_TEST`` = ``newest`` or ``oldest``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _declared_floor() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"pandas\b", d)]
    m = re.fullmatch(r"pandas>=([0-9.]+)", spec.split(";")[0].strip())
    assert m, f"pandas is declared as {spec!r}: give a floor only (tested: floor and newest)"
    return m.group(1)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_the_makefile_tests_the_declared_floor() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (oldest,) = re.findall(r"^PANDAS_OLDEST := (\S+)$", makefile, flags=re.M)
    assert oldest == _declared_floor()
    assert _version(pd.__version__) >= _version(oldest)


def test_this_run_uses_the_pandas_it_was_asked_for() -> None:
    which = os.environ.get("HEALTHFED_PANDAS_UNDER_TEST")
    if which is None:
        pytest.skip("the main run: pandas as the test extra resolves it")
    assert Path(pd.__file__).resolve().is_relative_to(ROOT / ".venv-compat" / f"pandas-{which}")
    if which == "oldest":
        assert pd.__version__ == _declared_floor()
    else:
        assert _version(pd.__version__) >= (3, 0), pd.__version__
