"""A node's catalogue entries: what a site publishes about its datasets to the hub.

The entry needs the site's data (how many records and individuals remain once
opted-out patients are excluded) and the computations the site runs, so it is
built here, at the node; its HealthDCAT-AP fields, the rounding of counts and
the steward's metadata are :mod:`healthfed.governance.catalogue`'s, which
formats and never touches data. Nothing row-level leaves: the counts are
published rounded and never below the site's minimum cell count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthfed.data.sql import quote_ident
from healthfed.governance.catalogue import catalogue_entry, dataset_metadata
from healthfed.node.connection import RequestConnection

if TYPE_CHECKING:  # the hub imports this module: the node runtime loads only to answer
    from healthfed.node.runtime import Node

__all__ = ["describe_dataset"]


def describe_dataset(node: Node, dataset_name: str) -> dict[str, Any]:
    """The catalogue entry of ``node``'s dataset ``dataset_name`` (a JSON-ready dict).

    Parameters
    ----------
    node
        The site whose dataset is described (its policy sets the minimum count shown).
    dataset_name
        One of ``node.datasets``.

    Returns
    -------
    dict
        The HealthDCAT-AP entry :meth:`healthfed.hub.Hub.publish` accepts.
    """
    # healthfed.compute imports every computation (NumPy, SciPy, ...): imported only when
    # an entry is built, so that opening a hub (CLI start-up) does not pay for it.
    from healthfed.compute import registered_computations

    ds = node.dataset(dataset_name)
    d = ds.descriptor
    meta = dataset_metadata(d.extra, node.catalogue or {}, dataset_name)
    with RequestConnection(ds, node.optouts) as opened:
        row = opened.con.execute(
            f"SELECT count(*), count(DISTINCT {quote_ident(d.id_column)}) FROM data"
        ).fetchone()
    n_rows, n_ids = (int(row[0]), int(row[1])) if row else (0, 0)
    return catalogue_entry(
        node.name,
        d,
        meta,
        n_rows=n_rows,
        n_individuals=n_ids,
        policy=node.policy,
        computations=registered_computations(),
    )
