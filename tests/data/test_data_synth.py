"""The synthetic COVID-19 cohort: determinism, shape, site differences, effect directions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import load_descriptor
from healthfed.data.synth import COVID_COLUMNS, generate_covid_cohort, write_covid_cohort


@pytest.fixture(scope="module")
def cohort() -> dict[str, pd.DataFrame]:
    return generate_covid_cohort(sites=4, rows=20_000, seed=1)


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    a = write_covid_cohort(tmp_path / "a", sites=2, rows=500, seed=7)
    b = write_covid_cohort(tmp_path / "b", sites=2, rows=500, seed=7)
    c = write_covid_cohort(tmp_path / "c", sites=2, rows=500, seed=8)
    assert [p.name for p in a] == [
        "hospital_1.parquet",
        "hospital_1.toml",
        "hospital_2.parquet",
        "hospital_2.toml",
    ]
    for pa_, pb in zip(a, b, strict=True):
        assert pa_.read_bytes() == pb.read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()


def test_site_data_do_not_depend_on_number_of_sites() -> None:
    two = generate_covid_cohort(sites=2, rows=300, seed=3)
    four = generate_covid_cohort(sites=4, rows=300, seed=3)
    pd.testing.assert_frame_equal(two["hospital_2"], four["hospital_2"])


def test_columns_and_descriptors(tmp_path: Path) -> None:
    paths = write_covid_cohort(tmp_path, sites=3, rows=400, seed=0)
    for k in (1, 2, 3):
        desc = load_descriptor(tmp_path / f"hospital_{k}.toml")
        assert desc.name == "covid" and desc.id_column == "patient_id"
        assert list(desc.columns) == list(COVID_COLUMNS)
        assert desc.columns["crp"].unit == ("mg/dL" if k == 2 else "mg/L")
        ds = NodeDataset(desc, cache_dir=tmp_path / "cache")
        assert ds.n_rows == 400
    assert len(paths) == 6
    assert len(COVID_COLUMNS) == 20


def test_values_within_declared_bounds(cohort: dict[str, pd.DataFrame]) -> None:
    for site, df in cohort.items():
        crp_scale = 10.0 if site == "hospital_2" else 1.0
        for name, spec in COVID_COLUMNS.items():
            if "bounds" in spec:
                values = df[name].dropna() * (crp_scale if name == "crp" else 1.0)
                lo, hi = spec["bounds"]
                assert values.between(lo, hi).all(), (site, name)
        assert df["patient_id"].str.startswith(f"{site}-").all() and df["patient_id"].is_unique


def test_hospital2_crp_harmonised_to_mg_per_l(tmp_path: Path) -> None:
    write_covid_cohort(tmp_path, sites=3, rows=5000, seed=2)
    medians = {}
    for k in (1, 2, 3):
        ds = NodeDataset.from_descriptor_file(
            tmp_path / f"hospital_{k}.toml", cache_dir=tmp_path / "c"
        )
        with ds.connect() as con:
            medians[k] = con.execute("SELECT median(crp) FROM data").fetchone()[0]
    raw2 = pd.read_parquet(tmp_path / "hospital_2.parquet")["crp"].median()
    assert raw2 < 15  # the file itself is in mg/dL
    assert 0.5 < medians[2] / medians[1] < 2.0 and 0.5 < medians[2] / medians[3] < 2.0


def test_direction_of_effects(cohort: dict[str, pd.DataFrame]) -> None:
    df = pd.concat(cohort.values(), ignore_index=True)
    death = df["death_28d"]
    assert death[df["age"] > 75].mean() > 3 * death[df["age"] < 50].mean()
    assert death[df["spo2"] < 90].mean() > 2 * death[df["spo2"] >= 95].mean()
    assert death[df["sex"] == "male"].mean() > death[df["sex"] == "female"].mean()
    for comorb in ("diabetes", "copd", "ckd"):
        assert death[df[comorb] == 1].mean() > death[df[comorb] == 0].mean(), comorb
    crp = df["crp"].where(df.index.isin(df.index[~df["patient_id"].str.startswith("hospital_2-")]))
    assert crp[death == 1].median() > crp[death == 0].median()
    assert df.loc[death == 1, "lymphocytes"].median() < df.loc[death == 0, "lymphocytes"].median()
    assert df.loc[df["icu"] == 1, "resp_rate"].mean() > df.loc[df["icu"] == 0, "resp_rate"].mean()
    # within an age band, vaccination protects
    old = df[df["age"].between(65, 80)]
    rates = old.groupby("vaccination", observed=True)["death_28d"].mean()
    assert rates["boosted"] < rates["unvaccinated"]


def test_sites_differ_and_missingness_depends_on_severity(cohort: dict[str, pd.DataFrame]) -> None:
    h1, h3, h4 = cohort["hospital_1"], cohort["hospital_3"], cohort["hospital_4"]
    assert h4["age"].mean() > h1["age"].mean() + 10
    assert (h4["age"] < 20).sum() < 0.01 * len(h4)
    assert h4["death_28d"].mean() > h3["death_28d"].mean()
    assert h3["ldh"].isna().mean() > 0.8 and h1["ldh"].isna().mean() < 0.6
    # D-dimer is missing more often in milder patients (not at random)
    mild = h1["spo2"] >= 96
    assert h1.loc[mild, "d_dimer"].isna().mean() > h1.loc[~mild, "d_dimer"].isna().mean()
    assert (h3["vaccination"] == "boosted").mean() < 0.001
