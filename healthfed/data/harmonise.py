"""Unit harmonisation: every node reports a clinical variable in one canonical unit.

Hospitals report the same laboratory value in different units (CRP in mg/L or
mg/dL, creatinine in µmol/L or mg/dL, D-dimer in mg/L FEU or ng/mL FEU). Pooling
such values without conversion silently mixes scales, so each node converts a
column from the unit its descriptor declares to the variable's canonical unit
*inside its own query*, before anything is aggregated.

The table below is deliberately small and explicit: a conversion is only applied
when it is exact (or a fixed clinical convention such as creatinine's molar mass).
Assay-dependent conversions, e.g. D-dimer DDU -> FEU, are *not* listed and raise.

Variables are matched by column name (case-insensitive, with a few aliases).
A column whose name is not a known variable, or which declares no unit, passes
through unchanged; a known variable with an unknown unit raises
:class:`~healthfed.errors.DataError` naming dataset, column and unit.

``canonical = (value + offset) * factor``; only temperature needs an offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthfed.errors import DataError


@dataclass(frozen=True)
class Conversion:
    """An affine map ``canonical = (value + offset) * factor`` from one unit to canonical."""

    factor: float
    offset: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.factor == 1.0 and self.offset == 0.0

    def sql(self, expr: str) -> str:
        """SQL applying the conversion to the DOUBLE expression ``expr``."""
        if self.is_identity:
            return expr
        inner = f"({expr} + {self.offset!r})" if self.offset else expr
        return f"({inner} * {self.factor!r})"


# variable -> (canonical unit, {normalised unit: Conversion}); the canonical unit maps to identity.
_CREATININE_MG_DL = 88.42  # µmol/L per mg/dL (molar mass 113.12 g/mol)
_UNITS: dict[str, tuple[str, dict[str, Conversion]]] = {
    "crp": (
        "mg/L",
        {
            "mg/l": Conversion(1.0),
            "ug/ml": Conversion(1.0),
            "mg/dl": Conversion(10.0),
            "g/l": Conversion(1000.0),
        },
    ),
    "creatinine": (
        "µmol/L",
        {
            "umol/l": Conversion(1.0),
            "mmol/l": Conversion(1000.0),
            "mg/dl": Conversion(_CREATININE_MG_DL),
            "mg/l": Conversion(_CREATININE_MG_DL / 10.0),
        },
    ),
    "d_dimer": (
        "mg/L FEU",
        {
            "mg/lfeu": Conversion(1.0),
            "ug/mlfeu": Conversion(1.0),
            "ug/lfeu": Conversion(0.001),
            "ng/mlfeu": Conversion(0.001),
            # Without a stated reporting basis these are taken as FEU (the common default).
            "mg/l": Conversion(1.0),
            "ug/ml": Conversion(1.0),
            "ug/l": Conversion(0.001),
            "ng/ml": Conversion(0.001),
        },
    ),
    "ldh": ("U/L", {"u/l": Conversion(1.0), "iu/l": Conversion(1.0), "ukat/l": Conversion(60.0)}),
    "lymphocytes": (
        "10^9/L",
        {
            "10^9/l": Conversion(1.0),
            "10e9/l": Conversion(1.0),
            "x10^9/l": Conversion(1.0),
            "g/l": Conversion(1.0),
            "10^3/ul": Conversion(1.0),
            "x10^3/ul": Conversion(1.0),
            "/ul": Conversion(0.001),
            "cells/ul": Conversion(0.001),
            "/mm3": Conversion(0.001),
        },
    ),
    "spo2": (
        "%",
        {"%": Conversion(1.0), "percent": Conversion(1.0), "fraction": Conversion(100.0)},
    ),
    "temperature": (
        "°C",
        {
            "°c": Conversion(1.0),
            "degc": Conversion(1.0),
            "c": Conversion(1.0),
            "celsius": Conversion(1.0),
            "°f": Conversion(5.0 / 9.0, -32.0),
            "degf": Conversion(5.0 / 9.0, -32.0),
            "f": Conversion(5.0 / 9.0, -32.0),
            "fahrenheit": Conversion(5.0 / 9.0, -32.0),
            "k": Conversion(1.0, -273.15),
        },
    ),
    "resp_rate": (
        "/min",
        {"/min": Conversion(1.0), "breaths/min": Conversion(1.0), "1/min": Conversion(1.0)},
    ),
    "heart_rate": (
        "/min",
        {
            "/min": Conversion(1.0),
            "beats/min": Conversion(1.0),
            "bpm": Conversion(1.0),
            "1/min": Conversion(1.0),
        },
    ),
    "age": (
        "years",
        {
            "years": Conversion(1.0),
            "year": Conversion(1.0),
            "y": Conversion(1.0),
            "a": Conversion(1.0),
            "months": Conversion(1.0 / 12.0),
            "days": Conversion(1.0 / 365.25),
        },
    ),
    "cholesterol": ("mg/dL", {"mg/dl": Conversion(1.0), "mmol/l": Conversion(38.67)}),
}

_ALIASES: dict[str, str] = {
    "c_reactive_protein": "crp",
    "creat": "creatinine",
    "ddimer": "d_dimer",
    "d-dimer": "d_dimer",
    "lactate_dehydrogenase": "ldh",
    "lymphocyte_count": "lymphocytes",
    "lymph": "lymphocytes",
    "oxygen_saturation": "spo2",
    "sao2": "spo2",
    "respiratory_rate": "resp_rate",
    "rr": "resp_rate",
    "pulse": "heart_rate",
    "hr": "heart_rate",
    "temp": "temperature",
    "body_temperature": "temperature",
    "chol": "cholesterol",
}


def _norm_unit(unit: str) -> str:
    """Normalise spelling so 'µmol/L', 'μmol/l' and 'umol / L' compare equal."""
    u = unit.strip().replace("\u00b5", "u").replace("\u03bc", "u").replace("⁹", "^9")
    u = u.replace("³", "3").replace("×", "x").replace("*", "")
    return "".join(u.split()).lower()


def variable_for(column: str) -> str | None:
    """The known clinical variable a column name denotes, or None."""
    key = column.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _UNITS else None


def canonical_unit(column: str) -> str | None:
    """The canonical unit of the variable ``column`` names, or None if not a known variable."""
    var = variable_for(column)
    return _UNITS[var][0] if var else None


def conversion(column: str, unit: str | None, *, dataset: str | None = None) -> Conversion:
    """The conversion from ``unit`` to the canonical unit of the variable ``column`` names.

    Parameters
    ----------
    column
        Column name; matched to a known variable (``crp``, ``creatinine`` ...).
    unit
        The unit the data file uses, as the descriptor declares it.
    dataset
        Dataset name, only used to make error messages actionable.

    Returns
    -------
    Conversion
        Identity when ``unit`` is None, the column is not a known variable, or the
        unit is already canonical.

    Raises
    ------
    DataError
        The column is a known variable but ``unit`` has no conversion.
    """
    var = variable_for(column)
    if unit is None or not unit.strip() or var is None:
        return Conversion(1.0)
    canon, table = _UNITS[var]
    conv = table.get(_norm_unit(unit))
    if conv is None:
        where = f"dataset {dataset!r}, " if dataset else ""
        raise DataError(
            f"{where}column {column!r}: no conversion from unit {unit!r} to the canonical unit "
            f"{canon!r} of {var}; known units: {sorted(table)}"
        )
    return conv


def alternative_units(column: str, unit: str | None) -> list[tuple[str, Conversion]]:
    """The other units the variable ``column`` names is known in, with their conversions.

    One entry per distinct conversion (the first spelling of each), the declared
    unit's own conversion left out; empty for a column that is not a known variable.
    Used to warn when a column's values fit another unit far better than the declared one.
    """
    var = variable_for(column)
    if var is None:
        return []
    declared = conversion(column, unit)
    seen = {(declared.factor, declared.offset)}
    out = []
    for name, conv in _UNITS[var][1].items():
        if (conv.factor, conv.offset) not in seen:
            seen.add((conv.factor, conv.offset))
            out.append((name, conv))
    return out


def conversion_factor(column: str, unit: str | None, *, dataset: str | None = None) -> float:
    """The multiplicative factor to canonical units (for pooled baselines and bounds).

    Raises DataError for affine conversions (°F -> °C), which need :func:`conversion_sql`.
    """
    conv = conversion(column, unit, dataset=dataset)
    if conv.offset:
        where = f"dataset {dataset!r}, " if dataset else ""
        raise DataError(
            f"{where}column {column!r}: unit {unit!r} needs an offset, not just a factor; "
            "use conversion_sql"
        )
    return conv.factor


def conversion_sql(expr: str, column: str, unit: str | None, *, dataset: str | None = None) -> str:
    """SQL converting the DOUBLE expression ``expr`` (column ``column`` in ``unit``) to canonical."""
    return conversion(column, unit, dataset=dataset).sql(expr)
