"""How a node's process asks the kernel for memory: no huge-page advice from numpy.

numpy advises the kernel to back every array of 4 MiB or more with transparent huge
pages (``madvise(MADV_HUGEPAGE)``). Where the kernel's THP ``defrag`` setting is
``madvise`` (a common default), a page fault in such an array may *compact memory
directly* before it returns, so fresh arrays cost system time out of all proportion
to their size. A node allocates and frees design matrices, profiles and Gram blocks
of tens of MiB for every request. Measured on the 2-core VM this project runs on
(``bench/RESULTS.md``): the first exact logistic regression over 4 x 250k rows in a
process took 7.0 s and 12.7 CPU-s (11 of them system time) with the advice, 3.2 s
and 6.0 CPU-s without; later fits in the same process were equal (2.3-2.5 s).

So the node turns the advice off once per process (:func:`no_huge_page_advice`,
called when a :class:`~healthfed.node.runtime.Node` is made). It changes how fast
memory arrives, never a number. An operator who sets ``NUMPY_MADVISE_HUGEPAGE``
(numpy's own switch, read when numpy is imported) keeps what they chose.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

__all__ = ["no_huge_page_advice"]

ENV_VAR = "NUMPY_MADVISE_HUGEPAGE"


def no_huge_page_advice() -> bool:
    """Stop numpy advising huge pages in this process; ``False`` if the operator chose.

    Idempotent and cheap (one flag in numpy), so every node construction may call it.
    """
    if ENV_VAR in os.environ:
        return False
    setter = _numpy_switch()
    if setter is None:  # a numpy without the switch: nothing to turn off
        return False
    setter(False)
    return True


def _numpy_switch() -> Callable[[bool], bool] | None:
    """numpy's ``_set_madvise_hugepage`` (``numpy._core`` from 2.0, ``numpy.core`` before)."""
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            switch = getattr(importlib.import_module(name), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if switch is not None:
            return switch  # type: ignore[no-any-return]
    return None
