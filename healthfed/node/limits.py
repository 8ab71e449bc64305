"""Limits on the work one request may cost a node: its size and shape, its workload, its time.

A researcher chooses every parameter of a request, and one request reaches every
site. Without limits a single request could take a node down: ``feature_moments``
over 5,000 copies of one column made DuckDB plan a query of 10,000 aggregates over
the dataset's view (116 s and 19 GB at one site of 300 patients; under a 4 GB
memory cap DuckDB ran out of memory; sent through the hub it killed every node). So before a computation
sees its parameters the node measures them against the site's limits
(:class:`~healthfed.policy.SitePolicy` fields, listed in :data:`LIMIT_FIELDS`):

* :func:`check_request_shape` -- generic, the same for every registered
  computation, on the JSON parameters as sent: the longest list of names or
  objects (``max_request_list``), the numbers in all (``max_request_numbers``:
  weights, coefficients, grids, candidates), the nesting depth
  (``max_request_depth``) and the size as JSON text (``max_request_bytes``).
  The walk is iterative (no recursion a deep request could exhaust) and stops at
  the first limit crossed.
* :func:`check_workload` -- what the generic check cannot know: the hidden units
  of a network (``max_hidden_units``), the recalibration candidates an evaluation
  scores (``max_candidates``) and the rows times epochs of local training
  (``max_train_row_epochs``, with the dataset's row count).
* :func:`request_deadline` -- the wall time (``max_request_seconds``): a watchdog
  thread interrupts the request's DuckDB connection once time is up (DuckDB's
  ``interrupt()``), numpy loops check the deadline between steps
  (:func:`healthfed.compute.deadline.check_deadline`), and a request that ran over
  is refused even if it finished. DuckDB honours an interrupt while it executes a
  query, not while it plans one (a 2,000-aggregate query ran 8 s past a 1 s
  deadline, planning), so the size limits above, not the deadline, are what keep a
  wide query from starting; the deadline bounds long scans, joins and loops.

Every refusal is a :class:`~healthfed.errors.PolicyDenied` naming the limit, its
value and the policy field that sets it; the node answers it as any refusal and
keeps serving.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from healthfed.compute.deadline import Deadline, deadline_scope
from healthfed.errors import PolicyDenied
from healthfed.policy import SitePolicy

__all__ = [
    "LIMIT_FIELDS",
    "check_request_shape",
    "check_workload",
    "request_deadline",
]

#: The site policy fields that limit one request's work (all checked here).
LIMIT_FIELDS = (
    "max_request_list",
    "max_request_numbers",
    "max_request_depth",
    "max_request_bytes",
    "max_hidden_units",
    "max_candidates",
    "max_train_row_epochs",
    "max_request_seconds",
)

# After the deadline the watchdog interrupts the connection again at this interval,
# so a query started just after an interrupt (DuckDB drops one that finds no query
# running) is stopped too.
_REPEAT_S = 0.05


def _refuse(computation: str, what: str, field: str, limit: Any) -> PolicyDenied:
    return PolicyDenied(
        f"{computation}: request over this site's limit {field} = {limit}: {what} "
        f"(site policy field {field!r})"
    )


def _label(path: str) -> str:
    return f"parameter {path!r}" if path else "the parameters"


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.number) and not isinstance(x, bool | np.bool_)


class _Shape:
    """Running totals of one walk over a request's parameters, refusing at the first excess."""

    def __init__(self, computation: str, policy: SitePolicy) -> None:
        self.computation = computation
        self.policy = policy
        self.numbers = 0
        self.bytes = 0

    def add_bytes(self, n: int, path: str) -> None:
        self.bytes += n
        limit = self.policy.max_request_bytes
        if self.bytes > limit:
            raise _refuse(
                self.computation,
                f"the parameters are more than {limit} bytes of JSON (at {_label(path)})",
                "max_request_bytes",
                limit,
            )

    def add_numbers(self, n: int, path: str) -> None:
        self.numbers += n
        limit = self.policy.max_request_numbers
        if self.numbers > limit:
            raise _refuse(
                self.computation,
                f"the parameters hold more than {limit} numbers (at {_label(path)})",
                "max_request_numbers",
                limit,
            )

    def depth(self, depth: int, path: str) -> None:
        limit = self.policy.max_request_depth
        if depth > limit:
            raise _refuse(
                self.computation,
                f"{_label(path)} is nested {depth} levels deep",
                "max_request_depth",
                limit,
            )

    def numeric_array(self, items: list[Any] | tuple[Any, ...], depth: int, path: str) -> bool:
        """Count ``items`` if it is a (nested) array of numbers only; False if it is not.

        Arrays of numbers (weights, coefficients, grids, candidates) are limited by
        how many numbers they hold, not by their length.
        """
        budget = self.policy.max_request_numbers - self.numbers
        try:
            count = _count_numbers(items, depth, self.policy.max_request_depth, budget)
        except _TooDeep as exc:
            self.depth(exc.depth, path)
            raise  # pragma: no cover - self.depth refused
        if count is None:
            return False
        self.add_numbers(count, path)
        self.add_bytes(len(json.dumps(items, default=float)), path)
        return True

    def scalar(self, value: Any, path: str) -> None:
        if isinstance(value, str):
            self.add_bytes(len(value) + 2, path)
        elif _is_number(value):
            self.add_numbers(1, path)
            self.add_bytes(len(repr(value)), path)
        elif isinstance(value, np.ndarray):
            self.add_numbers(int(value.size), path)
            self.add_bytes(8 * int(value.size), path)
        else:  # true / false / null, or anything a direct Python caller passed
            self.add_bytes(len(str(value)), path)


class _TooDeep(Exception):
    """An array nested deeper than the depth limit (the caller refuses it)."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


def _count_numbers(items: Any, depth: int, max_depth: int, budget: int) -> int | None:
    """Numbers in ``items`` (at ``depth``) if it is a nested list of numbers only, else None.

    Stops as soon as the count passes ``budget`` (the caller then refuses), and
    recurses at most ``max_depth`` levels: a deeper array raises :class:`_TooDeep`.
    """
    count = 0
    for x in items:
        if _is_number(x):
            count += 1
        elif isinstance(x, list | tuple):
            if depth + 1 > max_depth:
                raise _TooDeep(depth + 1)
            sub = _count_numbers(x, depth + 1, max_depth, budget - count)
            if sub is None:
                return None
            count += sub
        else:
            return None
        if count > budget:
            break
    return count


def check_request_shape(computation: str, params: Any, policy: SitePolicy) -> None:
    """Refuse parameters longer, larger or deeper than the site's limits allow.

    Generic over every computation: it reads only the JSON structure. A list of
    names or objects (columns, variables, attributes, spec entries, levels) may
    hold at most ``max_request_list`` items; arrays of numbers are counted
    against ``max_request_numbers`` instead; nothing may nest deeper than
    ``max_request_depth``, and the whole is at most ``max_request_bytes`` of JSON.

    Raises
    ------
    PolicyDenied
        At the first limit crossed, naming the parameter, the limit and its
        policy field.
    """
    shape = _Shape(computation, policy)
    stack: list[tuple[Any, str, int]] = [(params, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            shape.depth(depth, path)
            shape.add_bytes(2 + len(value), path)
            for key, item in value.items():
                name = str(key)
                sub = f"{path}.{name}" if path else name
                shape.add_bytes(len(name) + 3, sub)
                stack.append((item, sub, depth + 1))
        elif isinstance(value, list | tuple):
            shape.depth(depth, path)
            if shape.numeric_array(value, depth, path):
                continue
            limit = policy.max_request_list
            if len(value) > limit:
                raise _refuse(
                    computation,
                    f"{_label(path)} lists {len(value)} items",
                    "max_request_list",
                    limit,
                )
            shape.add_bytes(2 + len(value), path)
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        else:
            shape.scalar(value, path)


def _int_value(value: Any) -> int | None:
    """``value`` if it is a plain integer (anything else is left to ``validate``)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_workload(computation: str, params: Any, dataset: Any, policy: SitePolicy) -> None:
    """Refuse a request whose work the generic check cannot see, naming the limit.

    Read off the request's parameters before ``validate`` (a malformed value is
    left to ``validate``, which refuses it): the hidden units of a network, given
    as ``hidden`` (``local_train``) or ``model.hidden`` (the evaluation and trust
    computations); the number of ``candidates`` an evaluation scores; and, for
    ``local_train``, the dataset's rows times ``epochs`` (all rows: the rows it
    trains on can only be fewer).

    Raises
    ------
    PolicyDenied
        Over ``max_hidden_units``, ``max_candidates`` or ``max_train_row_epochs``.
    """
    if not isinstance(params, dict):
        return
    hidden_units = [("hidden", params.get("hidden"))]
    if isinstance(params.get("model"), dict):
        hidden_units.append(("model.hidden", params["model"].get("hidden")))
    for path, value in hidden_units:
        hidden = _int_value(value)
        if hidden is not None and hidden > policy.max_hidden_units:
            raise _refuse(
                computation,
                f"parameter {path!r} asks for {hidden} hidden units",
                "max_hidden_units",
                policy.max_hidden_units,
            )
    candidates = params.get("candidates")
    if isinstance(candidates, list) and len(candidates) > policy.max_candidates:
        raise _refuse(
            computation,
            f"parameter 'candidates' lists {len(candidates)} candidates",
            "max_candidates",
            policy.max_candidates,
        )
    if computation == "local_train":
        _check_row_epochs(computation, params, dataset, policy)


def _check_row_epochs(computation: str, params: dict[str, Any], dataset: Any, policy: Any) -> None:
    epochs = _int_value(params.get("epochs", 1))
    rows = getattr(dataset, "n_rows", None)
    if epochs is None or not isinstance(rows, int):
        return
    if rows * epochs > policy.max_train_row_epochs:
        raise _refuse(
            computation,
            f"{epochs} epochs over {rows} rows are {rows * epochs} row-epochs",
            "max_train_row_epochs",
            policy.max_train_row_epochs,
        )


class _Watchdog:
    """Interrupts a DuckDB connection once the deadline has passed, until stopped."""

    def __init__(self, deadline: Deadline, con: Any) -> None:
        self._deadline = deadline
        self._con = con
        self._done = threading.Event()
        self.fired = False
        self._thread = threading.Thread(
            target=self._run, name="healthfed-request-deadline", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        if self._done.wait(max(self._deadline.remaining, 0.0)):
            return
        while not self._done.is_set():
            self._interrupt()
            self._done.wait(_REPEAT_S)

    def _interrupt(self) -> None:
        con = self._con
        if not getattr(con, "opened", True):  # a lazy connection nobody opened: nothing runs
            return
        try:
            con.interrupt()
            self.fired = True
        except Exception:  # noqa: BLE001 - e.g. closed meanwhile: nothing left to stop
            pass

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@contextmanager
def request_deadline(
    policy: SitePolicy, con: Any = None, clock: Callable[[], float] = time.monotonic
) -> Iterator[Deadline]:
    """Run the block under the site's wall-time limit (``max_request_seconds``).

    While the block runs, :func:`healthfed.compute.deadline.check_deadline` sees this
    deadline (cooperative checks in numpy loops) and, when ``con`` is given, a
    watchdog thread interrupts that DuckDB connection (or
    :class:`~healthfed.node.connection.LazyConnection`, once opened) after the
    deadline. Whatever the block raised after the deadline passed -- DuckDB's
    interrupt, an error it caused, the cooperative check -- becomes the one
    refusal naming the limit; a block that finished late is refused too.

    Raises
    ------
    PolicyDenied
        The request ran over ``max_request_seconds``.
    """
    deadline = Deadline(policy.max_request_seconds, "max_request_seconds", clock=clock)
    watchdog = _Watchdog(deadline, con) if con is not None else None
    try:
        with deadline_scope(deadline):
            yield deadline
    except Exception:
        if deadline.expired:
            raise deadline.refusal() from None
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()
    if deadline.expired:
        raise deadline.refusal()
