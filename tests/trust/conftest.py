"""Shared fixtures: a small synthetic COVID-19 federation on files and its pooled rows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _trust_helpers import FEATURES, HOLDOUT, ROWS, SITES, TARGET, age_band, federation, pooled_rows  # noqa: F401 - shared with the tests

import healthfed.compute  # noqa: F401 - registers the computations


@pytest.fixture(scope="session")
def node_files(tmp_path_factory) -> list[Path]:
    from healthfed.demo import prepare_nodes

    logging.getLogger("healthfed").setLevel(logging.ERROR)
    return prepare_nodes(tmp_path_factory.mktemp("trust-nodes"), SITES, ROWS, seed=3)


@pytest.fixture(scope="session")
def fed(node_files):
    f = federation(node_files)
    yield f
    f.close()


@pytest.fixture(scope="session")
def glm(fed):
    from healthfed.compute.glm import FederatedLogisticRegression

    return FederatedLogisticRegression().fit(fed, "covid", TARGET, FEATURES, holdout=HOLDOUT)
