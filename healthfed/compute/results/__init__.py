"""Hub-side result objects: pooling the sites' disclosed replies.

* :mod:`~healthfed.compute.results.pooling` — the pooling rule and the shared labels.
* :mod:`~healthfed.compute.results.summary` — ``table1`` / ``describe`` results.
* :mod:`~healthfed.compute.results.tables` — ``crosstab`` / ``count`` results.
* :mod:`~healthfed.compute.results.dp` — DP statistics and the threshold-path sum.

Every result has ``sites`` (contributing sites), ``to_frame()``, ``to_dict()``
(JSON-able, suppressed values ``None``) and ``to_text()``.
"""

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.results.pooling import ALL, MISSING, OVERALL

if TYPE_CHECKING:
    from healthfed.compute.results.dp import DPResult, SumResult
    from healthfed.compute.results.summary import (
        DescribeResult,
        SummaryResult,
        Table1Result,
        combine_summary,
    )
    from healthfed.compute.results.tables import CountResult, CrosstabResult

__all__ = [
    "ALL",
    "MISSING",
    "OVERALL",
    "CountResult",
    "CrosstabResult",
    "DPResult",
    "DescribeResult",
    "SumResult",
    "SummaryResult",
    "Table1Result",
    "combine_summary",
]


# The result tables (pandas) are imported on first use (PEP 562): a node imports the
# computations that build them only to register those, and never builds one.
_LAZY = {
    "DPResult": "healthfed.compute.results.dp",
    "SumResult": "healthfed.compute.results.dp",
    "DescribeResult": "healthfed.compute.results.summary",
    "SummaryResult": "healthfed.compute.results.summary",
    "Table1Result": "healthfed.compute.results.summary",
    "combine_summary": "healthfed.compute.results.summary",
    "CountResult": "healthfed.compute.results.tables",
    "CrosstabResult": "healthfed.compute.results.tables",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
