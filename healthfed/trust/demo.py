"""The demo's last step: train the COVID-19 model, evaluate it federated and write its trust report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthfed.compute.glm import FederatedLogisticRegression
from healthfed.trust.report import build_report

__all__ = ["COVID_FEATURES", "COVID_TARGET", "EXAMPLE_PATIENT", "write_demo_report"]

COVID_TARGET = "death_28d"
COVID_FEATURES = [
    "age",
    "sex",
    "vaccination",
    "diabetes",
    "hypertension",
    "copd",
    "ckd",
    "obesity",
    "spo2",
    "resp_rate",
    "crp",
]
#: The patient whose prediction the demo report explains (invented values).
EXAMPLE_PATIENT: dict[str, Any] = {
    "age": 78,
    "sex": "male",
    "vaccination": "unvaccinated",
    "diabetes": 1,
    "hypertension": 1,
    "copd": 0,
    "ckd": 0,
    "obesity": 0,
    "spo2": 88,
    "resp_rate": 28,
    "crp": 140,
}
HOLDOUT = {"fraction": 0.3, "seed": 2024}


def _estimator() -> Any:
    return FederatedLogisticRegression()


def write_demo_report(
    federation: Any,
    out_dir: str | Path,
    *,
    dataset: str = "covid",
    permit: dict[str, Any] | None = None,
) -> Path:
    """Train 28-day death ~ age, sex, comorbidities, vaccination, SpO2, RR, CRP and report it.

    Exact federated logistic regression on 70% of every site's patients (a
    deterministic per-patient split), federated evaluation on the other 30%, and
    the trust report written to ``out_dir/report.html`` (+ ``report.json``); the
    model artefact goes to ``out_dir/model``. Returns the HTML path.
    """
    out = Path(out_dir)
    model = _estimator().fit(federation, dataset, COVID_TARGET, COVID_FEATURES, holdout=HOLDOUT)
    report = build_report(
        federation,
        dataset,
        model,
        COVID_TARGET,
        sensitive=("sex", "age_band", "vaccination"),
        threshold=0.2,
        holdout=HOLDOUT,
        permit=permit,
        purpose=None
        if permit
        else "Demonstration: 28-day mortality risk of admitted COVID-19 patients",
        example_patient=EXAMPLE_PATIENT,
        title="Trust report: 28-day mortality after COVID-19 admission (synthetic demo)",
        synthetic=True,
        out_dir=out,
        save_model_to=out / "model",
    )
    return Path(report.data["written_to"])
