"""The hub's catalogue: the nodes' HealthDCAT-AP dataset descriptions.

A node describes its own datasets (:func:`healthfed.node.catalogue.describe_dataset`:
counts rounded, none below the site's minimum) and the hub keeps the entries;
applications are scoped against them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from healthfed.errors import HealthfedError
from healthfed.hub import models as m
from healthfed.hub.core import HubState, now_utc
from healthfed.node.catalogue import describe_dataset

if TYPE_CHECKING:  # importing the hub must not load the node runtime (every computation)
    from healthfed.node.runtime import Node

__all__ = ["CatalogueDesk"]

ENTRY_FIELDS = ("identifier", "site", "dataset", "variables")


class CatalogueDesk(HubState):
    """Publishing and reading catalogue entries."""

    def publish(self, entry: dict[str, Any], actor: str | None = None) -> str:
        """Add or replace a catalogue entry (a :func:`describe_dataset` dict)."""
        for f in ENTRY_FIELDS:
            if f not in entry:
                raise HealthfedError(f"catalogue entry lacks field {f!r}")
        ident = str(entry["identifier"])
        with self._session() as s, s.begin():
            s.merge(
                m.CatalogueEntry(
                    identifier=ident,
                    site=str(entry["site"]),
                    dataset=str(entry["dataset"]),
                    published_at=now_utc(),
                    entry=entry,
                )
            )
        self._audit(
            "catalogue_publish", actor or str(entry["site"]), decision="published", dataset=ident
        )
        return ident

    def publish_node(self, node: Node) -> list[str]:
        """Describe every dataset of ``node`` and publish it."""
        return [self.publish(describe_dataset(node, name)) for name in sorted(node.datasets)]

    def catalogue(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(m.CatalogueEntry).order_by(m.CatalogueEntry.identifier))
            return [dict(r.entry) for r in rows]

    def catalogue_entry(self, identifier: str) -> dict[str, Any]:
        with self._session() as s:
            row = s.get(m.CatalogueEntry, identifier)
        if row is None:
            known = [e["identifier"] for e in self.catalogue()]
            raise HealthfedError(f"no catalogue entry {identifier!r}; the catalogue has {known}")
        return dict(row.entry)
