"""The UCI Heart Disease data: four real hospitals, bundled (CC BY 4.0; see ATTRIBUTION.md).

It is the natural real-data federation: Cleveland, Hungary (Budapest), Switzerland
(Zurich/Basel) and VA Long Beach collected the same 14 attributes with very different
case mixes and missingness, and FLamby (Fed-Heart-Disease) uses it as a benchmark.

* :func:`load_heart_disease_raw` - the file as published (``?`` read as missing).
* :func:`load_heart_disease` - cleaned for analysis: ``chol == 0`` and ``trestbps == 0``
  (not measured) read as missing, binary label ``disease = num > 0``, a pseudonymous
  ``patient_id``.
* :func:`write_heart_disease` - the four sites as node datasets (Parquet + descriptor).
* :func:`flamby_heart_disease_split` - FLamby's per-centre train/test split, to compare
  federated results with the published benchmark.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthfed.data.dataset import render_descriptor_toml
from healthfed.errors import DataError

__all__ = [
    "HEART_DISEASE_COLUMNS",
    "HEART_DISEASE_SITES",
    "flamby_heart_disease_split",
    "load_heart_disease",
    "load_heart_disease_raw",
    "write_heart_disease",
]

HEART_DISEASE_SITES = ("cleveland", "hungary", "switzerland", "va")
_FILES = {
    "cleveland": "processed.cleveland.data",
    "hungary": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}
HEART_DISEASE_COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)  # fmt: skip
_INT_COLUMNS = ("sex", "cp", "fbs", "restecg", "exang", "slope", "ca", "thal", "num")
FLAMBY_FEATURES = (
    "age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
    "cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2",
)  # fmt: skip

# Declared (public) column specs: bounds are clinical ranges, not read off the data.
_DESCRIPTOR_COLUMNS: dict[str, dict[str, Any]] = {
    "patient_id": {"type": "id", "description": "<site>-<line number in the UCI file>"},
    "age": {"type": "numeric", "unit": "years", "bounds": [18, 100], "description": "Age"},
    "sex": {"type": "binary", "description": "Sex (1 = male, 0 = female)"},
    "cp": {
        "type": "categorical",
        "levels": ["1", "2", "3", "4"],
        "description": "Chest pain: 1 typical angina, 2 atypical, 3 non-anginal, 4 asymptomatic",
    },
    "trestbps": {
        "type": "numeric",
        "unit": "mmHg",
        "bounds": [60, 250],
        "description": "Resting blood pressure on admission",
    },
    "chol": {
        "type": "numeric",
        "unit": "mg/dL",
        "bounds": [80, 700],
        "description": "Serum cholesterol",
    },
    "fbs": {"type": "binary", "description": "Fasting blood sugar > 120 mg/dL"},
    "restecg": {
        "type": "categorical",
        "levels": ["0", "1", "2"],
        "description": "Resting ECG: 0 normal, 1 ST-T abnormality, 2 LV hypertrophy",
    },
    "thalach": {
        "type": "numeric",
        "unit": "/min",
        "bounds": [50, 230],
        "description": "Maximum heart rate achieved",
    },
    "exang": {"type": "binary", "description": "Exercise-induced angina"},
    "oldpeak": {
        "type": "numeric",
        "unit": "mm",
        "bounds": [-4, 8],
        "description": "ST depression induced by exercise relative to rest",
    },
    "slope": {
        "type": "categorical",
        "levels": ["1", "2", "3"],
        "description": "Slope of peak exercise ST segment: 1 up, 2 flat, 3 down",
    },
    "ca": {
        "type": "categorical",
        "levels": ["0", "1", "2", "3"],
        "description": "Number of major vessels coloured by fluoroscopy",
    },
    "thal": {
        "type": "categorical",
        "levels": ["3", "6", "7"],
        "description": "Thallium scan: 3 normal, 6 fixed defect, 7 reversible defect",
    },
    "num": {
        "type": "categorical",
        "levels": ["0", "1", "2", "3", "4"],
        "description": "Angiographic diagnosis (0 = < 50% narrowing in any major vessel)",
    },
    "disease": {"type": "binary", "description": "Heart disease present (num > 0)"},
}


def _check_site(site: str) -> str:
    if site not in _FILES:
        raise DataError(
            f"unknown heart disease site {site!r}; choose one of {list(HEART_DISEASE_SITES)}"
        )
    return site


def _read_bundled(site: str) -> str:
    """The bundled file's text, located with importlib.resources (works when installed)."""
    ref = resources.files("healthfed.data").joinpath("bundled", "heart_disease", _FILES[site])
    try:
        return ref.read_text(encoding="ascii")
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"bundled heart disease file {_FILES[site]!r} not found: {exc}") from None


def load_heart_disease_raw(site: str) -> pd.DataFrame:
    """One site's file as published: 14 named float columns, ``?`` read as NaN.

    Parameters
    ----------
    site
        One of ``HEART_DISEASE_SITES``.
    """
    text = _read_bundled(_check_site(site))
    return pd.read_csv(
        io.StringIO(text),
        header=None,
        names=list(HEART_DISEASE_COLUMNS),
        na_values="?",
        dtype=float,
    )


def load_heart_disease(site: str) -> pd.DataFrame:
    """One site cleaned for analysis.

    ``chol == 0`` and ``trestbps == 0`` mean "not measured" and become NaN; coded
    columns become nullable integers; ``disease = int(num > 0)``; ``patient_id`` is
    ``<site>-<line>`` (1-based line number in the UCI file), first column.
    """
    df = load_heart_disease_raw(site)
    for col in ("chol", "trestbps"):
        df.loc[df[col] == 0, col] = np.nan
    for col in _INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    df["disease"] = (df["num"] > 0).astype("int8")
    df.insert(0, "patient_id", [f"{site}-{i}" for i in range(1, len(df) + 1)])
    return df


def heart_disease_descriptor_toml(site: str) -> str:
    """The descriptor TOML of one site's dataset (``heart_disease``)."""
    dataset = {
        "name": "heart_disease",
        "title": f"UCI Heart Disease, {site}",
        "description": (
            "Janosi, Steinbrunn, Pfisterer & Detrano (1989), UCI Machine Learning Repository, "
            "https://doi.org/10.24432/C52P4X, CC BY 4.0. Cleaned by healthfed "
            "(chol/trestbps == 0 read as missing; disease = num > 0)."
        ),
        "file": f"{site}.parquet",
        "format": "parquet",
        "id_column": "patient_id",
    }
    return render_descriptor_toml(dataset, _DESCRIPTOR_COLUMNS)


def write_heart_disease(out_dir: str | Path) -> list[Path]:
    """Write each site as ``<site>.parquet`` + ``<site>.toml`` (dataset ``heart_disease``).

    Returns
    -------
    list of Path
        ``[cleveland.parquet, cleveland.toml, hungary.parquet, ...]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for site in HEART_DISEASE_SITES:
        df = load_heart_disease(site)
        table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
        data = out / f"{site}.parquet"
        pq.write_table(table, data, compression="zstd")
        desc = out / f"{site}.toml"
        desc.write_text(heart_disease_descriptor_toml(site), encoding="utf-8")
        written += [data, desc]
    return written


def flamby_heart_disease_split(
    site: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """FLamby's Fed-Heart-Disease train/test split of one centre, reproduced exactly.

    As FLamby's ``HeartDiseaseRaw``: drop slope, ca, thal; drop every row that still
    has a ``?`` in the *raw* file (``chol == 0`` is kept as 0, as FLamby does); label
    ``num > 0``; one-hot ``cp`` and ``restecg`` with ``drop_first`` (fixed levels, so
    every centre has the 13 features of ``FLAMBY_FEATURES``); then
    ``train_test_split(train_size=0.66, test_size=0.34, random_state=43, shuffle=True)``
    on row positions, stratified on the label unless a class has <= 2 rows
    (Switzerland). Sizes: cleveland 199/104, hungary 172/89, switzerland 30/16, va 85/45.
    No normalisation is applied (FLamby's benchmark z-scores with train statistics).

    Returns
    -------
    X_train, X_test, y_train, y_test
        Float features and int labels, indexed by row position after dropping rows.

    Notes
    -----
    Needs scikit-learn (imported here only).
    """
    from sklearn.model_selection import train_test_split

    df = load_heart_disease_raw(site).drop(columns=["slope", "ca", "thal"]).dropna(axis=0)
    df = df.reset_index(drop=True)
    y = (df.pop("num") > 0).astype(int)
    for col, levels in (("cp", [1.0, 2.0, 3.0, 4.0]), ("restecg", [0.0, 1.0, 2.0])):
        df[col] = pd.Categorical(df[col], categories=levels)
    X = pd.get_dummies(df, columns=["cp", "restecg"], drop_first=True, dtype=float)
    X.columns = [c.replace(".0", "") for c in X.columns]
    X = X[list(FLAMBY_FEATURES)].astype(float)
    train_fraction = 0.66
    stratify = y if y.nunique() > 1 and all((y == v).sum() > 2 for v in y.unique()) else None
    idx_train, idx_test = train_test_split(
        np.arange(len(X)),
        test_size=1.0 - train_fraction,
        train_size=train_fraction,
        random_state=43,
        shuffle=True,
        stratify=stratify,
    )
    return X.iloc[idx_train], X.iloc[idx_test], y.iloc[idx_train], y.iloc[idx_test]
