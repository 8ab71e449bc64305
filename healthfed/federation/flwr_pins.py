"""The private parts of flwr 1.42 healthfed relies on, pinned by the hash of their source.

healthfed's SuperNode (:mod:`~healthfed.federation.deploy.supernode`) drives flwr's
own pull/push functions with its own waits; healthfed's SuperLink
(:mod:`~healthfed.federation.deploy.superlink_app`) builds flwr's app with its own
middleware list; both ends shorten the retry back-off of flwr's ``pull_objects``
(:func:`fast_object_pulls`). Those are private
functions that may change in any flwr release, even a patch one. :data:`FINGERPRINTS`
holds the SHA-256 of ``inspect.getsource`` of each; ``tests/federation/test_flower_loop.py``
fails when the installed flwr differs and names the function to re-read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from typing import Any

# Retry a missing object after 20 ms doubling to 0.5 s (flwr: 1 s doubling to 10 s).
OBJECT_PULL_BACKOFF_S = (0.02, 0.5)

FINGERPRINTS: dict[str, str] = {
    # healthfed's SuperNode replaces this loop (re-read: the sleeps, the sequence)...
    "flwr.supernode.start_client_internal.start_client_internal": (
        "9e89a6eb68fbec6821e817cd2c09f7894fc7b0f5725c2365b19a7122307f11f3"
    ),
    # ...and calls these as it does
    "flwr.supernode.start_client_internal._pull_and_store_message": (
        "eaf5d0e36dc34e4cf46a490511d077ac55cc8edbbcdbe938c1f6dbcb758628be"
    ),
    "flwr.supernode.start_client_internal._push_messages": (
        "00bb86faffdec114db87e7f716af2acd901d12284e44f51f5c2a84704db05f64"
    ),
    "flwr.supernode.start_client_internal._init_connection": (
        "800f9aba73646ea2c953bb5d8b7c0ae95ad33735fa522621787bbab48d300990"
    ),
    "flwr.supernode.cli.flower_supernode.flower_supernode": (
        "e263e10452076b0062e28433cca5d75a552a8a32635ac38a0101d7678231ddaf"
    ),
    "flwr.supernode.cli.flower_supernode._parse_supernode_lifespan_config": (
        "4094956c95246dbed45a4a7c77058d1362727b67fa703975bfc4f81a490541aa"
    ),
    "flwr.supernode.cli.flower_supernode._start_supernode_http_api": (
        "b2832210a0cad93a6334907011f65796dd5a096477f0afbfb966e831c17ef9de"
    ),
    # fast_object_pulls changes the back-off of the pulls in these
    "flwr.superlink.grid.http_grid.HttpGrid.pull_messages": (
        "67a5266a5a2ed51557437a15ef4c8844f46576bc5bb6b0753d2a2f6230a3aa83"
    ),
    "flwr.supernode.runtime.run_clientapp.pull_task_input": (
        "5607a23e1673ee876930c1b35685b8dfdfd8b3776a436560b0467042e15fc695"
    ),
    "flwr.supercore.inflatable.inflatable_utils.pull_and_inflate_object_from_tree": (
        "139811483a15e4a6c1f8523614c12f28dd3049194e5713816be0931387adb1cf"
    ),
    "flwr.supercore.inflatable.inflatable_utils.pull_objects": (
        "31bb2de46b450e6acfadb7a8bb15e3f2074bb112199826a40a5eaa648bad5b2b"
    ),
    # the data worker's one Runtime client sets this interceptor's ``_token`` per task
    # (executor.TaskToken) instead of building a client, and a TLS connection, per task
    "flwr.supercore.interceptors.http.runtime_token.RuntimeTokenHttpInterceptor": (
        "06cbf14d2ea81c278ff1bbf715727c41387287c7829cc7446a3a2307ff448ac4"
    ),
    # runtime_pipe answers the data worker's Runtime requests with these handlers (re-read:
    # their arguments, what they do with the state; a new request the worker makes)...
    "flwr.supernode.servicer.runtime.runtime_handlers.acquire_task": (
        "d11e03ec4b0b06a4775d46a180c0aca16aee4ddd02a6f7c17806c03e032ee171"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.pull_task_input": (
        "035e6c69a7cffcad980d6a38af68941151a7f6979031638d7cb28c5431df4d3d"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.push_task_output": (
        "1d148b25ce523291effd343fb4016288ac42e3a673d811cbde5c7032feb5075d"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.pull_messages": (
        "49089949d9fd1246197f3f40e25e6e0d4e211bfd8e76a63e0f64cb3a6602dc11"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.push_messages": (
        "f0b01d8d3c43d44a09f516e4192e6ab2aa16a211292ae0d5750b8ddeb87a1678"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.push_object": (
        "c6dad970cb51b02bbf509eac14d8f59a17d0fa492dec2758f466b2288067566f"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.pull_object": (
        "cf11db1e6a098b4a57a04d02f2eb2230ba1f6b8a65dbe4e51e840886a0595340"
    ),
    "flwr.supernode.servicer.runtime.runtime_handlers.confirm_message_received": (
        "d922673fae155c8e5a0a1b9526a81246060206ea35ce51a2e7a91c5c472acbfc"
    ),
    "flwr.supercore.servicer.runtime.runtime_handlers.acquire_task": (
        "e3701406b5547001d679f65d5aeb1ebdaf1e53a680fca9e39455d55ea3b0e003"
    ),
    "flwr.supercore.servicer.runtime.runtime_handlers.send_task_heartbeat": (
        "0664b523bbb1a7f6b574b0709fb639335cfc47fb9f71479d16ef65884e5c8172"
    ),
    # ...after resolving the task token as this does (re-read: any other check it adds)
    "flwr.supercore.dependencies.task.authenticate_task": (
        "7b4c0c58ea91353a9075df3af90acc2e5139cfa8f0ae9772651fbafecf25cc38"
    ),
    # healthfed's SuperNode replaces the SQL store module this factory imports
    # (memory_store; re-read: SqlObjectStore only for a database other than in-memory)
    "flwr.supercore.object_store.object_store_factory.ObjectStoreFactory": (
        "8737747562399b1a075b52fb6e9b3155c1f86775f2a468c0e2467316401733ad"
    ),
    # healthfed's SuperLink (superlink_app) builds flwr's app with its own middleware list
    "flwr.superlink.main._get_middleware": (
        "911d5e2a5aaf11ec21b9830e7f08948ba3676bbc9462da5b8f466fbb73e5724a"
    ),
    "flwr.superlink.main.create_app": (
        "ee966b630c8ba8b56315e8db3296df6c2ae6d9bd3a9826e28be63c85e321dbe1"
    ),
    "flwr.superlink.cli.flower_superlink.flower_superlink": (
        "398ce9c85755e9eec63ac0a11ec71230f99a68cbb504ea54c1e60b92fca03dde"
    ),
    "flwr.superlink.cli.flower_superlink._run_superlink_http_api": (
        "eb0d78b85f99957695c35e93ab10cc2766116f2fdb0c96bb982ff75f4e5cfc45"
    ),
    # ...skips these for Fleet/Runtime paths (re-read: their dispatch must pass those on)
    "flwr.superlink.routers.control.middlewares.ControlSensitiveResponseMiddleware": (
        "25cca938600324c2f1834aceba94915a6c8ea26871d796c5af5608ad9b18a90b"
    ),
    "flwr.superlink.routers.control.middlewares.ControlAuthenticationMiddleware": (
        "1495e41d9bbbd25d2fce0e7b81da0780ed9c9064fa9651a18987987daa87df21"
    ),
    "flwr.superlink.routers.control.middlewares.ControlLicenseMiddleware": (
        "0f57194171e921a3d5cbea4f1d59d8313c386c3b8a66ee79dfed6f845b0a15dc"
    ),
    "flwr.superlink.routers.control.middlewares.ControlEventLogMiddleware": (
        "d8db2d506ca7d0c5bc27c81bb5c1eebd6c41fc27e758e3ad47c687b0ee002636"
    ),
    "flwr.superlink.routers.fleet.middlewares.FleetEventLogMiddleware": (
        "4466ecde96fb2315fe44027e038b8ac693b49dc65c7a3810c2b2c5844305ae76"
    ),
    "flwr.superlink.routers.fleet.node_auth.NodeAuthMiddleware": (
        "36b9ef8b482a1722710dfe45def3d5d9620294c340f25b6dfed5130aaa66e90e"
    ),
    # ...and holds an empty pull, asking these again (re-read: an empty answer has no side effect; a unary answer is the raw protobuf)
    "flwr.supercore.protobuf.translation.ProtobufTranslationMiddleware": (
        "5ff23a6fdd06d0f99db4c972721307fb8523778ca380a8e6e9427562e571fd0f"
    ),
    "flwr.superlink.servicer.fleet.fleet_handlers.pull_messages": (
        "5f1d8861a9eb14651a1cea9ec21b4d7955470e5559ea76dc84745bf2d1964bd0"
    ),
    "flwr.superlink.servicer.runtime.runtime_handlers.pull_messages": (
        "8c998d6d197c09e4e7c9ceca1e16c49b9976510a827d759cab7928809431a288"
    ),
}


def resolve(dotted: str) -> Any:
    """The object ``package.module.attr[.attr]`` names (modules, not re-exported names)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of an object's source text."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


def fast_object_pulls(
    module_name: str, name: str = "pull_objects", *, stall_s: float | None = None
) -> None:
    """Make ``module_name``'s ``name`` (``pull_objects`` or
    ``pull_and_inflate_object_from_tree``) retry a missing object after 20 ms.

    A sender pushes a message before its objects; a receiver that pulls in between
    finds the message but not yet its objects, and flwr's ``pull_objects`` then waits
    1 s before asking again. With a fast poll that race is common. Only documented
    parameters change, in this process only.

    ``stall_s`` bounds how long one object may stay unavailable (flwr's
    ``max_tries_per_object``, from the back-off; ``None``: flwr's 500 tries). A sender
    killed after pushing a message but before its objects never sends them, and
    flwr's ``HttpGrid.pull_messages`` waits for them before it returns *any* reply
    it pulled; with 500 tries that held a whole round for minutes. Calling again
    with another ``stall_s`` replaces the bound.
    """
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    if isinstance(original, functools.partial):
        original = original.func
    initial, cap = OBJECT_PULL_BACKOFF_S
    keywords: dict[str, Any] = {"initial_backoff": initial, "backoff_cap": cap}
    if stall_s is not None:
        keywords["max_tries_per_object"] = tries_within(stall_s)
    setattr(module, name, functools.partial(original, **keywords))


def tries_within(seconds: float) -> int:
    """Pull attempts whose back-off waits (20 ms doubling to 0.5 s) add up to
    ``seconds``: flwr gives up on the attempt after the last wait."""
    initial, cap = OBJECT_PULL_BACKOFF_S
    tries, waited, delay = 1, 0.0, initial
    while waited + delay <= seconds:
        waited += delay
        delay = min(delay * 2, cap)
        tries += 1
    return tries
