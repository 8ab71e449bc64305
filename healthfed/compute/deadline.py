"""The wall-time deadline of the request a node is answering, as computations see it.

A node gives every request a deadline (the site's ``max_request_seconds``,
:mod:`healthfed.node.limits`). DuckDB queries are stopped from outside (the node
interrupts the request's connection when time is up); a long numpy loop cannot
be, so it calls :func:`check_deadline` between steps (e.g. between mini-batches
of local training) and the request is refused there, naming the policy field.
Outside a request (researcher-side code, tests calling a computation directly)
there is no deadline and :func:`check_deadline` does nothing.

The deadline lives in a :class:`contextvars.ContextVar`, so concurrent requests
in different threads each see their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from healthfed.errors import PolicyDenied

__all__ = ["Deadline", "check_deadline", "current_deadline", "deadline_scope"]


class Deadline:
    """A point in time after which the current request is refused.

    Parameters
    ----------
    seconds
        Wall time the request may take from now.
    field
        The policy field that sets ``seconds`` (named in the refusal).
    clock
        Monotonic clock in seconds; tests substitute it.
    """

    def __init__(
        self,
        seconds: float,
        field: str = "max_request_seconds",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = float(seconds)
        self.field = field
        self._clock = clock
        self._start = clock()

    @property
    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self._start + self.seconds - self._clock()

    @property
    def expired(self) -> bool:
        return self.remaining <= 0

    def refusal(self) -> PolicyDenied:
        """The refusal of a request that ran over this deadline."""
        return PolicyDenied(
            f"request over this site's wall-time limit: the node stopped it after "
            f"{self.field} = {self.seconds:g} s (policy field {self.field!r})"
        )

    def check(self) -> None:
        """Raise :meth:`refusal` once the deadline has passed."""
        if self.expired:
            raise self.refusal()


_current: ContextVar[Deadline | None] = ContextVar("healthfed_request_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The deadline of the request being answered in this context, if any."""
    return _current.get()


def check_deadline() -> None:
    """Refuse the current request if its deadline has passed (no-op outside a request).

    Cheap (a context-variable read and a clock read): long loops call it per step.

    Raises
    ------
    PolicyDenied
        The request's deadline has passed; the message names the policy field.
    """
    deadline = _current.get()
    if deadline is not None:
        deadline.check()


@contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Make ``deadline`` the current one for the duration of the block."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
