"""healthfed: federated statistics and AI on health data that never leaves the hospital.

The researcher's entry points are :class:`Federation` (``inprocess`` or ``flower``)
and its statistics methods; a hospital's are :class:`Node`, :class:`SitePolicy`,
:class:`NodeDataset` and the dataset descriptor.
"""

from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import ColumnSpec, DatasetDescriptor, load_descriptor
from healthfed.data.heart_disease import load_heart_disease, write_heart_disease
from healthfed.data.synth import generate_covid_cohort, write_covid_cohort
from healthfed.errors import (
    BudgetExceeded,
    DataError,
    FederationError,
    HealthfedError,
    NodeTimeout,
    PermitError,
    PolicyDenied,
    PolicyError,
    PrivacyError,
    ThresholdViolation,
)
from healthfed.federation.federation import Federation, RoundOutcome
from healthfed.node.policy import SitePolicy
from healthfed.node.runtime import Node, write_node_file

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "ColumnSpec",
    "DataError",
    "DatasetDescriptor",
    "Federation",
    "FederationError",
    "HealthfedError",
    "Node",
    "NodeDataset",
    "NodeTimeout",
    "PermitError",
    "PolicyDenied",
    "PolicyError",
    "PrivacyError",
    "RoundOutcome",
    "SitePolicy",
    "ThresholdViolation",
    "generate_covid_cohort",
    "load_descriptor",
    "load_heart_disease",
    "write_covid_cohort",
    "write_heart_disease",
    "write_node_file",
    "__version__",
]
