"""A synthetic, realistic COVID-19 hospital-admissions cohort, one dataset per hospital.

Used by the demo, the tests and the benchmarks: it has the shape, the units, the
missingness and the between-site differences a real multi-hospital cohort has,
so federated statistics can be checked against known truth.

Generative model (per patient; ``a = (age - 60) / 10``, ``σ(x) = 1 / (1 + e^-x)``)
-----------------------------------------------------------------------------------
1. **Demographics.** Age from a site-specific mixture: children/adolescents
   (uniform 0-20), young adults N(μ_y, σ_y) and older adults N(μ_o, σ_o), clipped to
   [0, 105] and floored to whole years. Male with a site-specific probability.
2. **Comorbidities** (logistic in age, correlated through obesity):
   obesity ``σ(-0.8 - 0.15a + s_ob)``; diabetes ``σ(-1.6 + 0.35a + 0.7 obese + s_cm)``;
   hypertension ``σ(-0.3 + 0.55a + 0.6 obese + s_cm)``; COPD
   ``σ(-2.7 + 0.4a + 0.3 male + s_lung)``; CKD ``σ(-3.0 + 0.5a + 0.5 diabetes + 0.4 hypertension + s_cm)``.
3. **Vaccination** (unvaccinated / partial / full / boosted) with site-specific
   shares (sites saw different pandemic waves), slightly more common with age.
4. **Latent severity** ``S = 0.5a + 0.25 male + 0.25 diabetes + 0.15 hypertension
   + 0.35 COPD + 0.35 CKD + 0.25 obesity + v + s_sev + ε``, ε ~ N(0, 1), with
   v = 0, -0.35, -0.7, -1.0 for the four vaccination levels. Directions follow the
   literature (e.g. Williamson et al., Nature 2020, OpenSAFELY; Knight et al., BMJ
   2020, ISARIC 4C): older age, male sex and comorbidities raise severity, vaccination
   lowers it.
5. **Admission vitals and labs given S** (log-normal for labs, as observed):
   SpO2 = 100 - exp(ln 4.5 + 0.45 S + 0.35 ε) %; respiratory rate 19 + 3 S + N(0, 3);
   heart rate 88 + 6 S + N(0, 14); temperature 37.5 + 0.25 S + N(0, 0.7) °C;
   ln CRP = ln 55 + 0.55 S + N(0, 0.8) mg/L; ln D-dimer = ln 0.8 + 0.5 S + 0.15a + N(0, 0.8) mg/L FEU;
   ln lymphocytes = ln 1.0 - 0.3 S + N(0, 0.45) 10^9/L (lymphopenia with severity);
   ln LDH = ln 300 + 0.3 S + N(0, 0.35) U/L; ln creatinine = ln 78 + 0.15 S + 0.1a
   + 0.15 male + 0.7 CKD + N(0, 0.3) µmol/L. All clipped to the declared bounds and
   rounded to the precision a lab reports.
6. **Outcomes** (logistic on severity): ICU ``σ(-2.4 + 1.1 S - 0.4 max(0, age-75)/10 + s_icu)``
   (ceilings of care in the very old), 28-day death ``σ(-2.9 + 1.2 S + 0.35a + 0.6 ICU + s_death)``.
   Because labs and vitals depend on S, low SpO2, high RR, high CRP/D-dimer/LDH/creatinine
   and lymphopenia are all associated with death and ICU, as in the literature.
7. **Missingness** (not at random): D-dimer missing with ``σ(-0.2 - 1.1 S + s_lab)``
   and LDH with ``σ(-0.6 - 0.9 S + s_lab)`` - milder patients get fewer labs; other
   vitals/labs 1-4 % missing completely at random.

Sites (``hospital_1`` .. ``hospital_N``; profiles repeat every 4 sites)
-----------------------------------------------------------------------
* hospital_1 - urban teaching hospital: mixed ages incl. a paediatric ward, average outcomes.
* hospital_2 - regional hospital, older catchment, more diabetes/hypertension, higher
  mortality; **reports CRP in mg/dL** (values /10, descriptor unit ``"mg/dL"``).
* hospital_3 - community hospital, early-pandemic cohort: younger, more obesity, almost
  nobody vaccinated (boosters essentially absent), lower mortality; **D-dimer and LDH
  rarely ordered**.
* hospital_4 - geriatric/tertiary centre: old patients (very few under 20, so small
  cells appear in age-stratified tables), more COPD/CKD, fewer ICU admissions, highest
  mortality.

Determinism: site ``k`` draws from ``np.random.default_rng(SeedSequence(seed, spawn_key=(k,)))``,
so a site's data depend only on ``seed``, ``k`` and ``rows`` (not on the number of sites),
and files are written with fixed Parquet settings: same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from healthfed.data.dataset import render_descriptor_toml
from healthfed.errors import InvalidArgument

__all__ = ["COVID_COLUMNS", "generate_covid_cohort", "write_covid_cohort"]

VACCINATION_LEVELS = ("unvaccinated", "partial", "full", "boosted")
SEX_LEVELS = ("female", "male")
_ROW_GROUP_SIZE = 122_880

# Declared (public) column specs in the canonical units; order = file column order.
COVID_COLUMNS: dict[str, dict[str, Any]] = {
    "patient_id": {"type": "id", "description": "Site-prefixed pseudonymous admission id"},
    "age": {
        "type": "numeric",
        "unit": "years",
        "bounds": [0, 110],
        "description": "Age at admission",
    },
    "sex": {"type": "categorical", "levels": list(SEX_LEVELS), "description": "Sex"},
    "diabetes": {"type": "binary", "description": "Diabetes mellitus"},
    "hypertension": {"type": "binary", "description": "Hypertension"},
    "copd": {"type": "binary", "description": "Chronic obstructive pulmonary disease"},
    "ckd": {"type": "binary", "description": "Chronic kidney disease"},
    "obesity": {"type": "binary", "description": "Obesity (BMI >= 30)"},
    "vaccination": {
        "type": "categorical",
        "levels": list(VACCINATION_LEVELS),
        "description": "COVID-19 vaccination status at admission",
    },
    "spo2": {
        "type": "numeric",
        "unit": "%",
        "bounds": [50, 100],
        "description": "Oxygen saturation on room air",
    },
    "resp_rate": {
        "type": "numeric",
        "unit": "/min",
        "bounds": [5, 70],
        "description": "Respiratory rate",
    },
    "heart_rate": {
        "type": "numeric",
        "unit": "/min",
        "bounds": [30, 220],
        "description": "Heart rate",
    },
    "temperature": {
        "type": "numeric",
        "unit": "°C",
        "bounds": [33, 43],
        "description": "Body temperature",
    },
    "crp": {
        "type": "numeric",
        "unit": "mg/L",
        "bounds": [0, 600],
        "description": "C-reactive protein",
    },
    "d_dimer": {
        "type": "numeric",
        "unit": "mg/L FEU",
        "bounds": [0, 100],
        "description": "D-dimer",
    },
    "lymphocytes": {
        "type": "numeric",
        "unit": "10^9/L",
        "bounds": [0, 20],
        "description": "Lymphocyte count",
    },
    "ldh": {
        "type": "numeric",
        "unit": "U/L",
        "bounds": [50, 5000],
        "description": "Lactate dehydrogenase",
    },
    "creatinine": {
        "type": "numeric",
        "unit": "µmol/L",
        "bounds": [10, 2000],
        "description": "Serum creatinine",
    },
    "icu": {"type": "binary", "description": "Admitted to intensive care"},
    "death_28d": {"type": "binary", "description": "Died within 28 days of admission"},
}


@dataclass(frozen=True)
class _Site:
    """How one hospital's population and practice differ (see the module docstring)."""

    title: str
    p_child: float
    p_young: float
    young: tuple[float, float]
    old: tuple[float, float]
    p_male: float
    vacc: tuple[float, float, float, float]
    s_ob: float = 0.0
    s_cm: float = 0.0
    s_lung: float = 0.0
    s_sev: float = 0.0
    s_icu: float = 0.0
    s_death: float = 0.0
    s_lab: float = 0.0


_PROFILES = (
    _Site(
        "urban teaching hospital", 0.03, 0.22, (40, 11), (66, 14), 0.57, (0.45, 0.10, 0.30, 0.15)
    ),
    _Site(
        "regional hospital, older catchment",
        0.005,
        0.10,
        (45, 12),
        (72, 12),
        0.53,
        (0.35, 0.10, 0.35, 0.20),
        s_cm=0.3,
        s_death=0.25,
    ),
    _Site(
        "community hospital, early-pandemic cohort",
        0.02,
        0.35,
        (42, 11),
        (60, 15),
        0.55,
        (0.93, 0.05, 0.01999, 0.00001),
        s_ob=0.4,
        s_sev=0.1,
        s_icu=0.3,
        s_death=-0.3,
    ),
    _Site(
        "geriatric and tertiary centre",
        0.003,
        0.04,
        (50, 10),
        (79, 8),
        0.50,
        (0.25, 0.05, 0.35, 0.35),
        s_cm=0.2,
        s_lung=0.4,
        s_icu=-0.6,
        s_death=0.1,
    ),
)


def _site_profile(k: int) -> tuple[_Site, bool, bool]:
    """(profile, reports CRP in mg/dL, rarely orders D-dimer/LDH) for hospital_k."""
    return _PROFILES[(k - 1) % len(_PROFILES)], k == 2, k == 3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _site_arrays(k: int, rows: int, seed: int) -> dict[str, Any]:
    """Draw one site's columns as numpy arrays (float64 with NaN for missing, int8 for binary).

    The stages draw from one generator in a fixed order (demographics, comorbidities,
    vaccination, severity, vitals and labs, outcomes, missingness), so the same seed
    gives the same bytes.
    """
    prof, crp_mg_dl, few_labs = _site_profile(k)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
    cols = _demographics(rng, rows, prof)
    cols.update(_comorbidities(rng, rows, prof, cols))
    cols.update(_vaccination(rng, rows, prof, cols))
    sev = _severity(rng, rows, prof, cols)
    cols.update(_vitals_and_labs(rng, rows, sev, cols))
    cols.update(_outcomes(rng, rows, prof, sev, cols))
    _missingness(rng, rows, sev, few_labs, cols)
    if crp_mg_dl:
        cols["crp"] = np.round(cols["crp"] / 10.0, 2)
    cols.pop("_a")  # a working variable, not a column
    out: dict[str, Any] = dict(cols)
    out["patient_id"] = _patient_ids(k, rows)
    out["sex"] = (out.pop("male"), SEX_LEVELS)
    out["vaccination"] = (out.pop("vacc"), VACCINATION_LEVELS)
    return {name: out[name] for name in COVID_COLUMNS}  # the file's column order


def _bern(rng: np.random.Generator, n: int, p: np.ndarray | float) -> np.ndarray:
    return (rng.random(n) < p).astype(np.int8)


def _demographics(rng: np.random.Generator, n: int, prof: Any) -> dict[str, np.ndarray]:
    comp = rng.random(n)
    age = np.where(
        comp < prof.p_child,
        rng.uniform(0.0, 20.0, n),
        np.where(
            comp < prof.p_child + prof.p_young,
            rng.normal(prof.young[0], prof.young[1], n),
            rng.normal(prof.old[0], prof.old[1], n),
        ),
    )
    age = np.floor(np.clip(age, 0.0, 105.0))
    return {"age": age, "_a": (age - 60.0) / 10.0, "male": _bern(rng, n, prof.p_male)}


def _comorbidities(
    rng: np.random.Generator, n: int, prof: Any, c: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    a, male = c["_a"], c["male"]
    obesity = _bern(rng, n, _sigmoid(-0.8 - 0.15 * a + prof.s_ob))
    diabetes = _bern(rng, n, _sigmoid(-1.6 + 0.35 * a + 0.7 * obesity + prof.s_cm))
    hypertension = _bern(rng, n, _sigmoid(-0.3 + 0.55 * a + 0.6 * obesity + prof.s_cm))
    copd = _bern(rng, n, _sigmoid(-2.7 + 0.4 * a + 0.3 * male + prof.s_lung))
    ckd = _bern(rng, n, _sigmoid(-3.0 + 0.5 * a + 0.5 * diabetes + 0.4 * hypertension + prof.s_cm))
    return {
        "obesity": obesity,
        "diabetes": diabetes,
        "hypertension": hypertension,
        "copd": copd,
        "ckd": ckd,
    }


def _vaccination(
    rng: np.random.Generator, n: int, prof: Any, c: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Site shares of the vaccination levels, tilted towards vaccination with age."""
    p = np.asarray(prof.vacc, dtype=np.float64)
    u = rng.random(n) ** np.exp(-0.15 * np.clip(c["_a"], -3, 3))  # older -> later level
    vacc = np.searchsorted(np.cumsum(p)[:-1], u, side="right").astype(np.int8)
    return {"vacc": vacc, "_v_effect": np.array([0.0, -0.35, -0.7, -1.0])[vacc]}


def _severity(rng: np.random.Generator, n: int, prof: Any, c: dict[str, np.ndarray]) -> np.ndarray:
    """The latent severity that drives vitals, labs and outcomes."""
    return (
        0.5 * c["_a"]
        + 0.25 * c["male"]
        + 0.25 * c["diabetes"]
        + 0.15 * c["hypertension"]
        + 0.35 * c["copd"]
        + 0.35 * c["ckd"]
        + 0.25 * c["obesity"]
        + c.pop("_v_effect")
        + prof.s_sev
        + rng.standard_normal(n)
    )


def _vitals_and_labs(
    rng: np.random.Generator, n: int, sev: np.ndarray, c: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    a = c["_a"]
    out = {
        "spo2": np.round(
            np.clip(
                100.0 - np.exp(np.log(4.5) + 0.45 * sev + 0.35 * rng.standard_normal(n)), 50, 100
            )
        ),
        "resp_rate": np.round(np.clip(19.0 + 3.0 * sev + rng.normal(0, 3, n), 5, 70)),
        "heart_rate": np.round(np.clip(88.0 + 6.0 * sev + rng.normal(0, 14, n), 30, 220)),
        "temperature": np.round(np.clip(37.5 + 0.25 * sev + rng.normal(0, 0.7, n), 33, 43), 1),
        "crp": np.round(
            np.clip(np.exp(np.log(55.0) + 0.55 * sev + rng.normal(0, 0.8, n)), 0.1, 600), 1
        ),
        "d_dimer": np.round(
            np.clip(np.exp(np.log(0.8) + 0.5 * sev + 0.15 * a + rng.normal(0, 0.8, n)), 0.05, 100),
            2,
        ),
        "lymphocytes": np.round(np.clip(np.exp(-0.3 * sev + rng.normal(0, 0.45, n)), 0.05, 20), 2),
        "ldh": np.round(
            np.clip(np.exp(np.log(300.0) + 0.3 * sev + rng.normal(0, 0.35, n)), 50, 5000)
        ),
    }
    eta = np.log(78.0) + 0.15 * sev + 0.1 * a + 0.15 * c["male"] + 0.7 * c["ckd"]
    out["creatinine"] = np.round(np.clip(np.exp(eta + rng.normal(0, 0.3, n)), 10, 2000))
    return out


def _outcomes(
    rng: np.random.Generator, n: int, prof: Any, sev: np.ndarray, c: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    late = np.maximum(0.0, c["age"] - 75.0) / 10.0
    icu = _bern(rng, n, _sigmoid(-2.4 + 1.1 * sev - 0.4 * late + prof.s_icu))
    death = _bern(rng, n, _sigmoid(-2.9 + 1.2 * sev + 0.35 * c["_a"] + 0.6 * icu + prof.s_death))
    return {"icu": icu, "death_28d": death}


def _missingness(
    rng: np.random.Generator, n: int, sev: np.ndarray, few_labs: bool, c: dict[str, np.ndarray]
) -> None:
    """Missing values in place: not at random for D-dimer and LDH, at random elsewhere."""
    s_lab_dd, s_lab_ldh = (2.2, 3.5) if few_labs else (0.0, 0.0)
    c["d_dimer"][rng.random(n) < _sigmoid(-0.2 - 1.1 * sev + s_lab_dd)] = np.nan
    c["ldh"][rng.random(n) < _sigmoid(-0.6 - 0.9 * sev + s_lab_ldh)] = np.nan
    for name, rate in (
        ("spo2", 0.01),
        ("resp_rate", 0.03),
        ("heart_rate", 0.01),
        ("temperature", 0.02),
        ("crp", 0.03),
        ("lymphocytes", 0.04),
        ("creatinine", 0.03),
    ):
        c[name][rng.random(n) < rate] = np.nan


def _patient_ids(k: int, n: int) -> Any:
    return pc.binary_join_element_wise(
        f"hospital_{k}-",
        pc.utf8_lpad(
            pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string()),
            width=7,
            padding="0",
        ),
        "",
    )


def _site_frame(k: int, rows: int, seed: int) -> pd.DataFrame:
    cols = _site_arrays(k, rows, seed)
    out: dict[str, Any] = {}
    for name, val in cols.items():
        if isinstance(val, tuple):
            out[name] = pd.Categorical.from_codes(val[0], categories=list(val[1]))
        elif isinstance(val, pa.Array | pa.ChunkedArray):
            out[name] = val.to_pandas()
        else:
            out[name] = val
    return pd.DataFrame(out)


def _site_table(k: int, rows: int, seed: int) -> pa.Table:
    """The site as an Arrow table with fixed types (no pandas metadata: stable bytes)."""
    cols = _site_arrays(k, rows, seed)
    arrays: dict[str, pa.Array] = {}
    for name, val in cols.items():
        if isinstance(val, tuple):
            arrays[name] = pa.DictionaryArray.from_arrays(pa.array(val[0]), pa.array(list(val[1])))
        elif isinstance(val, pa.Array | pa.ChunkedArray):
            arrays[name] = val
        elif val.dtype == np.int8:
            arrays[name] = pa.array(val)
        else:
            arrays[name] = pa.array(val, from_pandas=True)  # NaN -> null
    return pa.table(arrays)


def generate_covid_cohort(
    sites: int = 4, rows: int = 5000, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Generate the synthetic cohort in memory.

    Parameters
    ----------
    sites
        Number of hospitals (``hospital_1`` .. ``hospital_N``).
    rows
        Admissions per hospital.
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    dict
        Site name -> DataFrame with the columns of ``COVID_COLUMNS``, in the units the
        site reports (hospital_2's CRP in mg/dL).
    """
    _check_args(sites, rows)
    return {f"hospital_{k}": _site_frame(k, rows, seed) for k in range(1, sites + 1)}


def _check_args(sites: int, rows: int) -> None:
    if sites < 1 or rows < 1:
        raise InvalidArgument(f"sites and rows must be positive, got sites={sites}, rows={rows}")


def covid_descriptor_toml(k: int, seed: int, rows: int) -> str:
    """The descriptor of hospital_k: declared types, units (its own CRP unit), bounds, levels."""
    prof, crp_mg_dl, few_labs = _site_profile(k)
    columns = {name: dict(spec) for name, spec in COVID_COLUMNS.items()}
    if crp_mg_dl:
        columns["crp"]["unit"] = "mg/dL"  # bounds stay in the canonical unit (mg/L)
    notes = "; reports CRP in mg/dL" if crp_mg_dl else ""
    notes += "; D-dimer and LDH rarely ordered" if few_labs else ""
    dataset = {
        "name": "covid",
        "title": f"Synthetic COVID-19 admissions, hospital_{k}",
        "description": f"Synthetic data (healthfed.data.synth, seed {seed}, {rows} rows): {prof.title}{notes}.",
        "file": f"hospital_{k}.parquet",
        "format": "parquet",
        "id_column": "patient_id",
    }
    return render_descriptor_toml(dataset, columns)


def write_covid_cohort(
    out_dir: str | Path, sites: int = 4, rows: int = 5000, seed: int = 0
) -> list[Path]:
    """Write ``hospital_k.parquet`` and its descriptor ``hospital_k.toml`` for every site.

    One site at a time is held in memory. Files are byte-identical for the same
    arguments (fixed Parquet settings, no timestamps, no pandas metadata).

    Returns
    -------
    list of Path
        ``[hospital_1.parquet, hospital_1.toml, hospital_2.parquet, ...]``.
    """
    _check_args(sites, rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in range(1, sites + 1):
        data = out / f"hospital_{k}.parquet"
        tmp = out / f".hospital_{k}.parquet.tmp"
        pq.write_table(
            _site_table(k, rows, seed),
            tmp,
            compression="zstd",
            compression_level=3,
            row_group_size=_ROW_GROUP_SIZE,
            use_dictionary=True,
            write_statistics=True,
            store_schema=True,
        )
        tmp.replace(data)
        desc = out / f"hospital_{k}.toml"
        desc.write_text(covid_descriptor_toml(k, seed, rows), encoding="utf-8")
        written += [data, desc]
    return written
