"""Hub-side result objects: pooling the sites' disclosed replies.

* :mod:`~healthfed.compute.results.pooling` — the pooling rule and the shared labels.
* :mod:`~healthfed.compute.results.summary` — ``table1`` / ``describe`` results.
* :mod:`~healthfed.compute.results.tables` — ``crosstab`` / ``count`` results.
* :mod:`~healthfed.compute.results.dp` — DP statistics and the threshold-path sum.

Every result has ``sites`` (contributing sites), ``to_frame()``, ``to_dict()``
(JSON-able, suppressed values ``None``) and ``to_text()``.
"""

from healthfed.compute.results.dp import DPResult, SumResult
from healthfed.compute.results.pooling import ALL, MISSING, OVERALL
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
