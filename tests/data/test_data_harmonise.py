"""Unit harmonisation: known conversions, pass-through, and errors that name the column."""

from __future__ import annotations

import duckdb
import pytest

from healthfed.data.harmonise import (
    canonical_unit,
    conversion,
    conversion_factor,
    conversion_sql,
    variable_for,
)
from healthfed.errors import DataError


@pytest.mark.parametrize(
    ("column", "unit", "factor"),
    [
        ("crp", "mg/dL", 10.0),
        ("crp", "mg/L", 1.0),
        ("CRP", "mg/dl", 10.0),
        ("creatinine", "mg/dL", 88.42),
        ("creatinine", "umol/L", 1.0),
        ("creatinine", "μmol/L", 1.0),  # Greek mu
        ("creatinine", "µmol/L", 1.0),  # micro sign
        ("d_dimer", "ng/mL FEU", 0.001),
        ("d_dimer", "µg/L", 0.001),
        ("d_dimer", "mg/L FEU", 1.0),
        ("ldh", "U/L", 1.0),
        ("ldh", "µkat/L", 60.0),
        ("lymphocytes", "10^9/L", 1.0),
        ("lymphocytes", "cells/µL", 0.001),
        ("spo2", "%", 1.0),
        ("temperature", "°C", 1.0),
    ],
)
def test_known_factors(column: str, unit: str, factor: float) -> None:
    assert conversion_factor(column, unit) == pytest.approx(factor)


def test_no_unit_unknown_variable_and_canonical_pass_through() -> None:
    assert conversion("crp", None).is_identity
    assert conversion("my_score", "points").is_identity
    assert conversion("crp", "mg/L").is_identity
    assert conversion_sql('"crp"', "crp", "mg/L") == '"crp"'
    assert canonical_unit("crp") == "mg/L" and canonical_unit("my_score") is None
    assert variable_for("D-Dimer") == "d_dimer"


def test_unknown_unit_names_dataset_column_and_unit() -> None:
    with pytest.raises(DataError) as exc:
        conversion("d_dimer", "ng/mL DDU", dataset="covid")
    msg = str(exc.value)
    assert "'covid'" in msg and "'d_dimer'" in msg and "ng/mL DDU" in msg and "mg/L FEU" in msg


def test_fahrenheit_is_affine_in_sql_and_refused_as_a_factor() -> None:
    sql = conversion_sql("x", "temperature", "°F")
    value = duckdb.connect().execute(f"SELECT {sql} FROM (SELECT 98.6::DOUBLE AS x)").fetchone()[0]
    assert value == pytest.approx(37.0)
    with pytest.raises(DataError, match="temperature"):
        conversion_factor("temperature", "°F", dataset="covid")
