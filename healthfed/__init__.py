"""healthfed: federated statistics and AI on health data that never leaves the hospital.

The researcher's entry points are :class:`Federation` (``inprocess``, ``flower``,
``flower_remote``), its statistics methods and the federated estimators; a
hospital's are :class:`Node`, :class:`SitePolicy`, :class:`NodeDataset` and the
dataset descriptor; an access body's is :class:`Hub`.

Names are imported on first use (PEP 562), so ``import healthfed`` and the CLI
start fast even though the package spans DuckDB, Flower, SQLAlchemy and matplotlib.
"""

from __future__ import annotations

from healthfed._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "HealthfedError": "healthfed.errors",
    "DataError": "healthfed.errors",
    "PolicyError": "healthfed.errors",
    "PolicyDenied": "healthfed.errors",
    "PermitError": "healthfed.errors",
    "PrivacyError": "healthfed.errors",
    "ThresholdViolation": "healthfed.errors",
    "BudgetExceeded": "healthfed.errors",
    "FederationError": "healthfed.errors",
    "NodeTimeout": "healthfed.errors",
    "InvalidArgument": "healthfed.errors",
    "PermitRefused": "healthfed.errors",
    "SecureRefusal": "healthfed.errors",
    "TooFewSites": "healthfed.errors",
    # data
    "ColumnSpec": "healthfed.data.descriptor",
    "DatasetDescriptor": "healthfed.data.descriptor",
    "load_descriptor": "healthfed.data.descriptor",
    "NodeDataset": "healthfed.data.dataset",
    "generate_covid_cohort": "healthfed.data.synth",
    "write_covid_cohort": "healthfed.data.synth",
    "load_heart_disease": "healthfed.data.heart_disease",
    "write_heart_disease": "healthfed.data.heart_disease",
    # node
    "SitePolicy": "healthfed.policy",
    "Node": "healthfed.node.runtime",
    "write_node_file": "healthfed.node.config",
    # federation
    "Federation": "healthfed.federation.federation",
    "RoundOutcome": "healthfed.compute.rounds",
    "ApprovalPending": "healthfed.errors",
    # models and evaluation
    "FederatedPreprocessor": "healthfed.compute.preprocess",
    "FederatedGLM": "healthfed.compute.glm",
    "FederatedLogisticRegression": "healthfed.compute.glm",
    "FedAvgLogisticRegression": "healthfed.compute.fedavg",
    "FederatedMLPClassifier": "healthfed.compute.fedavg",
    "FederatedCoxPH": "healthfed.compute.survival",
    "kaplan_meier": "healthfed.compute.survival",
    "evaluate_classifier": "healthfed.compute.evaluation",
    # governance
    "Hub": "healthfed.hub",
    # trust
    "build_report": "healthfed.trust",
    "save_model": "healthfed.trust",
    "load_model": "healthfed.trust",
    "predict": "healthfed.trust",
    "record_decision": "healthfed.trust",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return __all__
