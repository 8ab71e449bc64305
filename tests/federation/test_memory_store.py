"""healthfed's SuperNode process never loads flwr's SQL object store (nor SQLAlchemy)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from healthfed.federation.deploy.memory_store import without_sql_object_store
assert without_sql_object_store()
import healthfed.federation.deploy.supernode  # what the SuperNode entry imports
from flwr.supercore.object_store import ObjectStoreFactory
from healthfed.errors import FederationError
print(type(ObjectStoreFactory().store()).__name__)  # the SuperNode's own: in memory
try:
    ObjectStoreFactory("objects.db").store()
except FederationError as exc:
    print("refused:", exc)
print(sorted(m for m in ("sqlalchemy", "alembic") if m in sys.modules))
"""


def test_the_supernode_keeps_objects_in_memory_without_sqlalchemy(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "InMemoryObjectStore", out.stdout + out.stderr
    assert lines[1].startswith("refused: healthfed's SuperNode keeps its object store in memory")
    assert lines[2] == "[]"
    assert not (tmp_path / "objects.db").exists()
