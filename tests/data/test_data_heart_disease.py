"""The bundled UCI Heart Disease files: counts, cleaning, node datasets and FLamby's split."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest

from healthfed.data.dataset import NodeDataset
from healthfed.data.heart_disease import (
    FLAMBY_FEATURES,
    HEART_DISEASE_COLUMNS,
    HEART_DISEASE_SITES,
    flamby_heart_disease_split,
    load_heart_disease,
    load_heart_disease_raw,
    write_heart_disease,
)
from healthfed.errors import DataError

ROWS = {"cleveland": 303, "hungary": 294, "switzerland": 123, "va": 200}
POSITIVES = {"cleveland": 139, "hungary": 106, "switzerland": 115, "va": 149}


def test_bundled_files_are_the_documented_bytes() -> None:
    folder = resources.files("healthfed.data").joinpath("bundled", "heart_disease")
    sha = hashlib.sha256(folder.joinpath("processed.cleveland.data").read_bytes()).hexdigest()
    assert sha == "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"
    assert folder.joinpath("ATTRIBUTION.md").is_file()
    assert folder.joinpath("heart-disease.names").is_file()


@pytest.mark.parametrize("site", HEART_DISEASE_SITES)
def test_raw_counts_and_label(site: str) -> None:
    raw = load_heart_disease_raw(site)
    assert list(raw.columns) == list(HEART_DISEASE_COLUMNS)
    assert len(raw) == ROWS[site]
    clean = load_heart_disease(site)
    assert int(clean["disease"].sum()) == POSITIVES[site]
    assert clean["patient_id"].is_unique and clean["patient_id"].iloc[0] == f"{site}-1"


def test_hidden_missingness_zero_chol_and_trestbps() -> None:
    zero_chol = {
        s: int((load_heart_disease_raw(s)["chol"] == 0).sum()) for s in HEART_DISEASE_SITES
    }
    assert zero_chol == {"cleveland": 0, "hungary": 0, "switzerland": 123, "va": 49}
    assert int(load_heart_disease("switzerland")["chol"].isna().sum()) == 123
    va = load_heart_disease("va")
    assert int(va["chol"].isna().sum()) == 49 + 7  # zeros plus '?'
    assert int(va["trestbps"].isna().sum()) == 56 + 1
    assert int(load_heart_disease_raw("hungary")["ca"].isna().sum()) == 291


def test_unknown_site_is_named() -> None:
    with pytest.raises(DataError, match="'mars'"):
        load_heart_disease("mars")


@pytest.mark.parametrize(
    ("site", "n_train", "n_test"),
    [("cleveland", 199, 104), ("hungary", 172, 89), ("switzerland", 30, 16), ("va", 85, 45)],
)
def test_flamby_split_sizes(site: str, n_train: int, n_test: int) -> None:
    X_train, X_test, y_train, y_test = flamby_heart_disease_split(site)
    assert (len(X_train), len(X_test), len(y_train), len(y_test)) == (
        n_train,
        n_test,
        n_train,
        n_test,
    )
    assert list(X_train.columns) == list(FLAMBY_FEATURES)
    assert not X_train.isna().any().any()
    assert set(X_train.index).isdisjoint(X_test.index)


def test_flamby_keeps_zero_cholesterol() -> None:
    X_train, X_test, _, _ = flamby_heart_disease_split("switzerland")
    assert (X_train["chol"] == 0).all() and (X_test["chol"] == 0).all()


def test_written_sites_load_as_node_datasets(tmp_path: Path) -> None:
    paths = write_heart_disease(tmp_path)
    assert len(paths) == 8
    for site in HEART_DISEASE_SITES:
        ds = NodeDataset.from_descriptor_file(tmp_path / f"{site}.toml", cache_dir=tmp_path / "c")
        assert ds.name == "heart_disease" and ds.n_rows == ROWS[site]
        with ds.connect() as con:
            n_disease, cps = con.execute(
                "SELECT sum(disease), list(DISTINCT cp ORDER BY cp) FROM data"
            ).fetchone()
        assert n_disease == POSITIVES[site]
        assert set(cps) <= {"1", "2", "3", "4"}
