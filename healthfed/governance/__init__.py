"""Governance the nodes enforce: permits, purposes, audit, catalogue descriptions.

* :mod:`~healthfed.governance.permit` — signed EHDS data permits and the node-side checks.
* :mod:`~healthfed.governance.purposes` — Art. 53(1) purposes, Art. 54 prohibited uses.
* :mod:`~healthfed.governance.audit` — hash-chained, append-only audit logs.
* :mod:`~healthfed.governance.catalogue` — HealthDCAT-AP dataset descriptions.
* :mod:`~healthfed.governance.node_config` — a node's ``[governance]`` settings.

The hub (the health data access body's side) is :mod:`healthfed.hub`.
"""

from healthfed.governance.audit import AuditLog, AuditReport, verify_audit_log
from healthfed.governance.canonical import canonical_json
from healthfed.governance.permit import PermitRefused, check_permit, load_permit, sign_permit
from healthfed.governance.purposes import PROHIBITED_USES, Purpose

__all__ = [
    "PROHIBITED_USES",
    "AuditLog",
    "AuditReport",
    "PermitRefused",
    "Purpose",
    "canonical_json",
    "check_permit",
    "load_permit",
    "sign_permit",
    "verify_audit_log",
]
