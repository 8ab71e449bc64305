"""Trustworthy-AI layer: trust reports, model artefacts, fairness and human oversight.

* :func:`build_report` -> :class:`TrustReport` (``to_dict()``, ``write(out_dir)``:
  ``report.html`` + ``report.json``), every number from federated evaluation;
* :func:`save_model` / :func:`load_model`: the JSON model artefact (no pickles);
* :func:`predict` / :func:`record_decision`: one patient's prediction with
  uncertainty, explanation and out-of-distribution warnings, and the
  clinician's audited accept/override;
* :class:`FederatedMetricFrame`: Fairlearn-style disaggregated metrics.
"""

import healthfed.compute.importance as _importance  # noqa: F401 - registers computations
import healthfed.compute.subgroups as _subgroups  # noqa: F401 - registers computations
from healthfed.trust.artefact import ModelArtefact, load_model, model_hash, save_model
from healthfed.trust.demo import write_demo_report
from healthfed.trust.fairness import FederatedMetricFrame, SubgroupResult
from healthfed.trust.predict import Prediction, predict, record_decision
from healthfed.trust.report import TrustReport, build_report

__all__ = [
    "FederatedMetricFrame",
    "ModelArtefact",
    "Prediction",
    "SubgroupResult",
    "TrustReport",
    "build_report",
    "load_model",
    "model_hash",
    "predict",
    "record_decision",
    "save_model",
    "write_demo_report",
]
