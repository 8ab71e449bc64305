"""Dataset descriptors: the small TOML file a data steward writes next to a data file.

A descriptor says which file holds the data, how to read it, which column is the
patient id and, for every column a computation may use, its type, unit and
declared bounds. Bounds are *declared* (public knowledge such as "age 0-120"),
never read off the private data, so they can safely fix histogram grids and DP
sensitivities. Example::

    [dataset]
    name = "covid"
    title = "COVID-19 admissions"
    file = "hospital_1.parquet"      # relative to this descriptor
    format = "parquet"               # or "csv"
    id_column = "patient_id"

    [columns.age]
    type = "numeric"                 # numeric | integer | binary | categorical | id
    unit = "years"
    bounds = [0, 120]

    [columns.sex]
    type = "categorical"
    levels = ["female", "male"]

    [columns.crp]
    type = "numeric"
    unit = "mg/dL"                   # the file's unit; the node harmonises it to mg/L
    bounds = [0, 600]                # bounds in the canonical unit

    [csv]                            # only for format = "csv"; these are the defaults
    delimiter = ","                  # ";" or "\t" for files from spreadsheets set up so
    decimal = "."                    # "," for a decimal comma (needs another delimiter)
    encoding = "utf-8"               # or "utf-16", "latin-1"
    header = true                    # false: columns in the declared order
    na_values = ["", "NA"]           # the texts that mean a missing value

Levels may be written as strings, numbers or booleans: ``[0, 1]``, ``["0", "1"]``
and ``[0.0, 1.0]`` are the same levels, and ``[false, true]`` matches a boolean
column or the text true/false in any case.

A file without a patient id column sets ``generate_id = true`` in ``[dataset]``:
the node then adds the column ``id_column`` itself, a pseudonymous id per row
(``g`` + 16 hex digits of a sha256 over the dataset name and the row's declared
values, ``-2``, ``-3``... for repeated identical rows). It is stable while a row's
values do not change (so holdout splits and cell keys stay put) and never leaves
the node; opt-outs, which name patients by the file's own ids, need a real id column.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthfed.errors import DataError

COLUMN_TYPES = ("numeric", "integer", "binary", "categorical", "id")
FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a dataset as its descriptor declares it."""

    name: str
    type: str
    unit: str | None = None
    levels: tuple[str, ...] | None = None
    bounds: tuple[float, float] | None = None
    description: str = ""

    @property
    def is_numeric(self) -> bool:
        return self.type in ("numeric", "integer")

    @property
    def is_categorical(self) -> bool:
        return self.type in ("categorical", "binary")


@dataclass(frozen=True)
class DatasetDescriptor:
    """A parsed, validated dataset descriptor. ``path`` is absolute."""

    name: str
    path: Path
    format: str
    id_column: str
    columns: dict[str, ColumnSpec]
    title: str = ""
    description: str = ""
    source: Path | None = None
    csv_delimiter: str = ","
    csv_header: bool = True
    csv_encoding: str = "utf-8"
    csv_decimal: str = "."
    na_values: tuple[str, ...] = ("", "NA")
    generate_id: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> ColumnSpec:
        """The spec of ``name``, or a DataError naming the dataset and column."""
        try:
            return self.columns[name]
        except KeyError:
            raise DataError(
                f"dataset {self.name!r} ({self.source or self.path}): no column {name!r}; "
                f"declared columns: {sorted(self.columns)}"
            ) from None


def level_text(value: Any) -> str:
    """A declared level as the text the data's values are matched against.

    ``true``/``false`` (TOML booleans) read as ``"true"``/``"false"``; an integral number
    (``1``, ``1.0``, ``"1.0"``) as ``"1"``, so a level matches however a file stores it.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    m = re.fullmatch(r"(-?[0-9]+)\.0+", text)
    return m.group(1) if m else text


def _where(source: Path | None, key: str) -> str:
    return f"{source or '<descriptor>'}: {key}"


def _parse_column(name: str, raw: Any, source: Path | None) -> ColumnSpec:
    where = _where(source, f"[columns.{name}]")
    if not isinstance(raw, dict):
        raise DataError(f"{where} must be a table")
    ctype = raw.get("type")
    if ctype not in COLUMN_TYPES:
        raise DataError(f"{where}: 'type' must be one of {list(COLUMN_TYPES)}, got {ctype!r}")
    unknown = sorted(set(raw) - {"type", "unit", "levels", "bounds", "description"})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}")
    levels = raw.get("levels")
    if levels is not None:
        if ctype != "categorical" and ctype != "binary":
            raise DataError(f"{where}: 'levels' is only for categorical or binary columns")
        if not isinstance(levels, list) or not levels:
            raise DataError(f"{where}: 'levels' must be a non-empty list")
        if not all(isinstance(v, str | int | float) for v in levels):
            raise DataError(f"{where}: 'levels' must be strings, numbers or booleans")
        levels = tuple(level_text(v) for v in levels)
        if len(set(levels)) != len(levels):
            raise DataError(f"{where}: 'levels' has duplicates (1, 1.0 and \"1\" are one level)")
    elif ctype == "binary":
        levels = ("0", "1")
    bounds = raw.get("bounds")
    if bounds is not None:
        if ctype not in ("numeric", "integer"):
            raise DataError(f"{where}: 'bounds' is only for numeric or integer columns")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            or not bounds[0] < bounds[1]
        ):
            raise DataError(f"{where}: 'bounds' must be [low, high] numbers with low < high")
        bounds = (float(bounds[0]), float(bounds[1]))
    unit = raw.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise DataError(f"{where}: 'unit' must be a string")
    return ColumnSpec(
        name=name,
        type=ctype,
        unit=unit,
        levels=levels,
        bounds=bounds,
        description=str(raw.get("description", "")),
    )


def descriptor_from_dict(
    raw: dict[str, Any], base_dir: Path, source: Path | None = None
) -> DatasetDescriptor:
    """Validate a descriptor already parsed from TOML. Paths resolve against ``base_dir``."""
    ds = raw.get("dataset")
    if not isinstance(ds, dict):
        raise DataError(f"{_where(source, '[dataset]')}: missing table [dataset]")
    for key in ("name", "file", "id_column"):
        if not isinstance(ds.get(key), str) or not ds[key]:
            raise DataError(f"{_where(source, '[dataset]')}: missing or empty field {key!r}")
    path = (base_dir / ds["file"]).resolve()
    fmt = ds.get("format") or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DataError(
            f"{_where(source, '[dataset].format')}: must be one of {list(FORMATS)}, got {fmt!r}"
        )
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise DataError(f"{_where(source, '[columns]')}: declare at least one column")
    columns = {name: _parse_column(name, spec, source) for name, spec in cols_raw.items()}
    id_column = ds["id_column"]
    if id_column not in columns:
        columns = {id_column: ColumnSpec(name=id_column, type="id"), **columns}
    elif columns[id_column].type != "id":
        raise DataError(
            f"{_where(source, f'[columns.{id_column}]')}: the id column must have type 'id'"
        )
    csv = raw.get("csv", {})
    na_values = tuple(str(v) for v in csv.get("na_values", ["", "NA"]))
    generate_id = ds.get("generate_id", False)
    if not isinstance(generate_id, bool):
        raise DataError(f"{_where(source, '[dataset].generate_id')}: must be true or false")
    encoding, decimal = _csv_encoding_decimal(csv, source)
    known = {"name", "file", "format", "id_column", "title", "description", "generate_id"}
    return DatasetDescriptor(
        name=ds["name"],
        path=path,
        format=fmt,
        id_column=id_column,
        columns=columns,
        title=str(ds.get("title", "")),
        description=str(ds.get("description", "")),
        source=source,
        csv_delimiter=str(csv.get("delimiter", ",")),
        csv_header=bool(csv.get("header", True)),
        csv_encoding=encoding,
        csv_decimal=decimal,
        na_values=na_values,
        generate_id=generate_id,
        extra={k: v for k, v in ds.items() if k not in known},
    )


def _csv_encoding_decimal(csv: dict[str, Any], source: Path | None) -> tuple[str, str]:
    """``[csv] encoding`` (utf-8, utf-16, latin-1) and ``decimal`` ("." or ",")."""
    from healthfed.data.csv_diagnose import CSV_ENCODINGS

    encoding = str(csv.get("encoding", "utf-8")).lower().replace("_", "-")
    encoding = {"utf8": "utf-8", "utf16": "utf-16", "latin1": "latin-1"}.get(encoding, encoding)
    if encoding not in CSV_ENCODINGS:
        raise DataError(
            f"{_where(source, '[csv].encoding')}: must be one of {list(CSV_ENCODINGS)}, "
            f"got {csv.get('encoding')!r}"
        )
    decimal = str(csv.get("decimal", "."))
    if decimal not in (".", ","):
        raise DataError(f'{_where(source, "[csv].decimal")}: must be "." or ",", got {decimal!r}')
    if decimal == "," and str(csv.get("delimiter", ",")) == ",":
        raise DataError(
            f"{_where(source, '[csv].decimal')}: a decimal comma needs another delimiter "
            '(e.g. [csv] delimiter = ";")'
        )
    return encoding, decimal


def load_descriptor(path: str | Path) -> DatasetDescriptor:
    """Read and validate a descriptor TOML file; errors name the file and key."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"descriptor file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not a TOML descriptor (not UTF-8 text); pass the dataset's .toml "
            "descriptor, not its data file"
        ) from None
    return descriptor_from_dict(raw, base_dir=path.parent, source=path)
