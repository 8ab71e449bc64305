"""The Runtime API over the socket pair between a healthfed SuperNode and its worker.

The requests are answered by flwr's own Runtime handlers on a real ``NodeState``
(no HTTP); a task's requests need the token ``AcquireTask`` handed out, as over
HTTPS. The deployed tests (``test_flower_loop.py``, ``test_flower_deploy.py``) run
every message through this pipe.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from flwr.proto.message_pb2 import PullObjectRequest, PushObjectRequest
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode.nodestate import NodeStateFactory

from healthfed.errors import FederationError
from healthfed.federation.deploy.runtime_pipe import (
    PipeClosed,
    PipeRuntimeClient,
    RuntimePipeServer,
    pipe_heartbeat,
)

CLAIM = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])


@pytest.fixture
def pipe() -> Iterator[tuple[object, PipeRuntimeClient]]:
    state = NodeStateFactory(objectstore_factory=ObjectStoreFactory()).state()
    ours, theirs = socket.socketpair()
    thread = RuntimePipeServer(state, ours).start()
    client = PipeRuntimeClient(theirs)
    yield state, client
    client.close()
    thread.join(timeout=5)
    assert not thread.is_alive()  # the server ends when the worker's end closes


def test_a_task_is_claimed_and_served_with_its_token(
    pipe: tuple[object, PipeRuntimeClient],
) -> None:
    state, client = pipe
    assert not client.AcquireTask(CLAIM).HasField("task")  # type: ignore[attr-defined]
    task_id = state.create_task(TaskType.CLIENT_APP, 7)  # type: ignore[attr-defined]
    claimed = client.AcquireTask(CLAIM)  # type: ignore[attr-defined]
    assert claimed.task.task_id == task_id and claimed.token
    client.set_token(claimed.token)
    assert client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success  # type: ignore[attr-defined]
    assert pipe_heartbeat(client)() is True
    # flwr's own handler answers, with flwr's own error for an object it does not hold
    found = client.PullObject(PullObjectRequest(object_id="ab" * 32))  # type: ignore[attr-defined]
    assert not found.object_found


def test_requests_without_a_valid_token_are_refused(pipe: tuple[object, PipeRuntimeClient]) -> None:
    state, client = pipe
    with pytest.raises(FederationError, match="PushObject: Runtime task-token authentication"):
        client.PushObject(PushObjectRequest(object_id="ab" * 32, object_content=b"x"))  # type: ignore[attr-defined]
    client.set_token("not-a-token")
    with pytest.raises(FederationError, match="SendTaskHeartbeat: Runtime task-token"):
        client.SendTaskHeartbeat(SendTaskHeartbeatRequest())  # type: ignore[attr-defined]
    assert pipe_heartbeat(client)() is False  # flwr's heartbeat sender retries, no crash
    # the refusal did not close the pipe
    assert not client.AcquireTask(CLAIM).HasField("task")  # type: ignore[attr-defined]


def test_an_unknown_method_is_refused_and_a_huge_frame_closes_the_pipe() -> None:
    state = NodeStateFactory(objectstore_factory=ObjectStoreFactory()).state()
    ours, theirs = socket.socketpair()
    thread = RuntimePipeServer(state, ours).start()
    body = struct.pack(">BH", 200, 0)
    theirs.sendall(struct.pack(">I", len(body)) + body)
    (size,) = struct.unpack(">I", theirs.recv(4))
    answer = theirs.recv(size)
    assert answer[0] == 1 and b"unknown Runtime method number 200" in answer
    theirs.sendall(struct.pack(">I", 2**31))  # claims a 2 GiB frame: refused unread
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert theirs.recv(1) == b""
    theirs.close()


def test_a_closed_supernode_end_is_pipe_closed() -> None:
    ours, theirs = socket.socketpair()
    ours.close()
    client = PipeRuntimeClient(theirs)
    with pytest.raises(PipeClosed, match="AcquireTask: the SuperNode closed the pipe"):
        client.AcquireTask(CLAIM)  # type: ignore[attr-defined]
    client.close()
