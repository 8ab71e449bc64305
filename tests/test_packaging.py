"""Packaging: an SPDX license expression with its LICENSE file, and py.typed in the wheel."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    meta = metadata("healthfed")
    assert meta["License-Expression"] == "Apache-2.0"


def test_the_package_is_marked_typed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["healthfed"]
    assert (ROOT / "healthfed" / "py.typed").is_file()
