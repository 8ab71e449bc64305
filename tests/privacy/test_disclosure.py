"""Disclosure rules on hand-made releases: primary, secondary, audit, statistics, histograms."""

from __future__ import annotations

import numpy as np
import pytest

from healthfed.errors import PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.disclosure import (
    CellMoments,
    CountTable,
    NumericSummary,
    Release,
    disclose,
    merge_histogram_bins,
)

POLICY = SitePolicy()


def _table(counts: list[list[int]], **kw: object) -> CountTable:
    a = np.array(counts)
    return CountTable(
        tuple(f"r{i}" for i in range(a.shape[0])),
        tuple(f"c{j}" for j in range(a.shape[1])),
        a,
        **kw,
    )  # type: ignore[arg-type]


def test_a_cell_of_three_is_none_and_secondary_suppression_hits_its_row_and_column() -> None:
    out = disclose(Release("t", {"t": _table([[3, 20, 30], [40, 50, 60], [70, 80, 90]])}), POLICY)
    t = out["tables"]["t"]
    assert t["counts"][0][0] is None  # never 0
    assert sum(v is None for v in t["counts"][0]) >= 2  # its row
    assert sum(row[0] is None for row in t["counts"]) >= 2  # its column
    assert t["total"] == 443
    assert out["suppressed_cells"] == len(out["suppressed"]) >= 4
    assert "t[r0, c0]" in out["suppressed"]
    released = [v for row in t["counts"] for v in row if v is not None]
    assert all(v == 0 or v >= 5 for v in released)


def test_zero_is_released_as_zero() -> None:
    out = disclose(Release("t", {"t": _table([[0, 20], [40, 50]])}), POLICY)
    assert out["tables"]["t"]["counts"] == [[0, 20], [40, 50]]
    assert out["suppressed_cells"] == 0


def test_small_margin_is_suppressed_with_its_cells() -> None:
    out = disclose(Release("t", {"t": _table([[1, 2], [40, 50]])}), POLICY)
    t = out["tables"]["t"]
    assert t["row_totals"][0] is None and t["counts"][0] == [None, None]
    # the row total 3 is derivable from column totals minus row 1 unless row 1 hides too
    assert t["col_totals"] == [41, 52] or None in t["counts"][1] or None in t["col_totals"]


def test_one_dimensional_table_hides_two_cells() -> None:
    out = disclose(Release("t", {"t": _table([[2], [30], [40], [50]])}), POLICY)
    col = [row[0] for row in out["tables"]["t"]["counts"]]
    assert col[0] is None and col.count(None) == 2 and col[1] is None  # smallest other cell
    assert out["tables"]["t"]["total"] == 122


def test_small_total_suppresses_everything() -> None:
    out = disclose(Release("t", {"t": _table([[1, 2], [0, 1]])}), POLICY)
    t = out["tables"]["t"]
    assert t["total"] is None and all(v is None or v == 0 for row in t["counts"] for v in row)


def test_linked_margins_share_suppression() -> None:
    n = CountTable(("N",), ("a", "b"), np.array([[50, 3]]))
    v = CountTable(("x", "y"), ("a", "b"), np.array([[20, 1], [30, 2]]), margin_of="N")
    out = disclose(Release("t", {"N": n, "v": v}), POLICY)
    assert out["tables"]["N"]["counts"][0][1] is None
    assert out["tables"]["v"]["col_totals"][1] is None
    assert out["tables"]["N"]["total"] == out["tables"]["v"]["total"] == 53


def test_inconsistent_margin_link_fails_closed() -> None:
    n = CountTable(("N",), ("a", "b"), np.array([[50, 30]]))
    v = CountTable(("x",), ("a", "b"), np.array([[20, 30]]), margin_of="N")
    with pytest.raises(PrivacyError, match="margin"):
        disclose(Release("t", {"N": n, "v": v}), POLICY)


def _summary(ns: list[int], grid: bool = False, overall: bool = True) -> Release:
    rng = np.random.default_rng(0)
    cells = []
    hists = []
    for n in ns:
        h = np.bincount(rng.integers(0, 20, n), minlength=20) if grid else None
        hists.append(h)
        cells.append(CellMoments(n, float(n), float(n), 0.0, 1.0, h))
    total = sum(ns)
    ov = CellMoments(total, 1.0, 1.0, 0.0, 1.0, np.sum(hists, axis=0) if grid else None)
    cols = tuple(f"g{j}" for j in range(len(ns)))
    t = CountTable(("n",), cols, np.array([ns]))
    return Release(
        "s",
        {"t": t},
        {
            "x": NumericSummary(
                "t", "n", tuple(cells), ov if overall else None, (0.0, 20.0, 20) if grid else None
            )
        },
    )


def test_statistics_need_a_released_count_of_min_subset() -> None:
    policy = SitePolicy(min_cell_count=3, min_subset=10)
    out = disclose(_summary([50, 60, 7, 4]), policy)
    cells = out["numeric"]["x"]["cells"]
    assert cells[3] is None  # count 4 is released (>= 3) but < min_subset
    assert cells[2] is None  # 7 < 10
    assert cells[0] is not None and cells[1] is not None
    assert out["numeric"]["x"]["overall"] is not None  # withheld set {7, 4}: 2 cells, 11 >= 10
    assert "min" not in cells[0]


def test_complement_rule_withholds_a_second_group() -> None:
    out = disclose(_summary([50, 60, 3]), POLICY)
    cells = out["numeric"]["x"]["cells"]
    assert cells[2] is None and cells[0] is None  # smallest released joins the withheld one
    assert cells[1] is not None and out["numeric"]["x"]["overall"] is not None


def test_complement_rule_falls_back_to_withholding_the_overall() -> None:
    policy = SitePolicy(min_cell_count=1, min_subset=10)
    out = disclose(_summary([50, 2]), policy)
    x = out["numeric"]["x"]
    # withheld {2} is too small alone; withholding 50 too makes {50, 2}: fine, overall kept
    assert x["cells"] == [None, None] and x["overall"] is not None


def test_min_max_released_only_when_allowed() -> None:
    out = disclose(_summary([50, 60]), SitePolicy(allow_min_max=True))
    assert out["numeric"]["x"]["cells"][0]["min"] == 0.0


def test_histograms_have_min_subset_per_bin_and_share_bins_with_withheld_groups() -> None:
    out = disclose(_summary([200, 150, 3], grid=True), POLICY)
    x = out["numeric"]["x"]
    released = [c for c in x["cells"] if c is not None] + [x["overall"]]
    for c in released:
        assert all(v >= 5 for v in c["hist"]["counts"])
        assert sum(c["hist"]["counts"]) == c["n"]
    assert len({tuple(c["hist"]["edges"]) for c in released}) == 1  # shared, not differenceable


def test_histograms_merge_independently_when_nothing_is_withheld() -> None:
    out = disclose(_summary([200, 30], grid=True), POLICY)
    x = out["numeric"]["x"]
    assert "hist" not in x["overall"]
    assert x["cells"][0]["hist"]["edges"] != x["cells"][1]["hist"]["edges"]


@pytest.mark.parametrize(
    ("series", "comp"),
    [
        ([5, 5, 5, 5, 1], [0, 0, 0, 3, 3]),
        ([5, 5, 5, 5, 1], [0, 0, 0, 0, 5]),
        ([5, 5, 1], [5, 0, 2]),
    ],
)
def test_merge_histogram_bins_keeps_complement_zero_or_large(
    series: list[int], comp: list[int]
) -> None:
    s, c = np.array([series]), np.array(comp)
    b = merge_histogram_bins(s, c, 5)
    assert b[0] == 0 and b[-1] == len(series)
    for lo, hi in zip(b[:-1], b[1:], strict=True):
        assert s[0, lo:hi].sum() >= 5
        assert c[lo:hi].sum() == 0 or c[lo:hi].sum() >= 5
