"""Errors lead with the cause, once, on one line, with their brackets intact.

* an unknown variable says so first (not "0 site(s) contributed"), and once for all sites;
* a permit refusal is a PermitError, not a ThresholdViolation;
* Rich markup does not eat ``[dataset]`` or ``[low, high]`` in a message;
* a UTF-16, semicolon-delimited or ragged CSV gives one line naming the ``[csv]`` option
  (or the row) that fixes it, not DuckDB's sniffer dump; with the option set it loads.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.synth import write_covid_cohort
from healthfed.errors import PermitError, PolicyDenied, ThresholdViolation
from healthfed.node.runtime import write_node_file

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("cohort")
    written = write_covid_cohort(out, sites=2, rows=300, seed=3)
    return sorted(p for p in written if p.suffix == ".toml")


@pytest.fixture
def sandbox_nodes(tmp_path: Path, cohort: list[Path]) -> list[Path]:
    return [
        write_node_file(tmp_path / f"{d.stem}.toml", name=d.stem, descriptors=[d]) for d in cohort
    ]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_an_unknown_variable_is_named_first_and_once(sandbox_nodes: list[Path]) -> None:
    r = runner.invoke(
        app,
        ["stats", "table1", *map(str, sandbox_nodes), "--vars", "age,nosuch", "--by", "death_28d"],
    )
    assert r.exit_code == 2, r.output
    (line,) = _error_lines(r.output)
    assert line.startswith("error: 'table1' on 'covid': 'variables' entry 'nosuch'"), line
    assert line.count("has no variable 'nosuch'") == 1
    assert "refused by every site: hospital_1, hospital_2" in line
    assert "0 site(s)" not in line


def test_a_permit_refusal_is_a_permit_error_not_a_threshold(
    tmp_path: Path, cohort: list[Path]
) -> None:
    from healthfed.federation.federation import Federation
    from healthfed.hub import Hub

    with Hub.init(tmp_path / "hub") as hub:
        nodes = [
            write_node_file(
                tmp_path / f"{d.stem}.toml",
                name=d.stem,
                descriptors=[d],
                hub_keys=[hub.public_key_path],
            )  # fmt: skip
            for d in cohort
        ]
        with Federation.from_node_files(nodes, requester="alice@uni.example") as fed:
            with pytest.raises(PermitError) as err:
                fed.count("covid")
    assert not isinstance(err.value, ThresholdViolation)
    assert err.value.checks == {"hospital_1": "missing", "hospital_2": "missing"}
    msg = str(err.value)
    assert msg.startswith("'count' on 'covid': permit check 'missing' failed"), msg
    assert msg.count("carries no data permit") == 1


def test_brackets_in_messages_are_printed_as_they_are(tmp_path: Path) -> None:
    not_a_descriptor = tmp_path / "node_like.toml"
    not_a_descriptor.write_text('[node]\nname = "x"\n')
    r = runner.invoke(
        app,
        ["node", "init", str(tmp_path / "n.toml"), "--name", "x", "--dataset",
         str(not_a_descriptor), "--sandbox"],
    )  # fmt: skip
    assert r.exit_code == 2
    (line,) = _error_lines(r.output)
    assert line.endswith(": [dataset]: missing table [dataset]"), line


def test_report_error_keeps_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    from healthfed.cli._errors import report_error

    assert report_error(PolicyDenied("declare bounds = [low, high]\nin the [csv] table")) == 2
    err = capsys.readouterr().err
    assert err == "error: declare bounds = [low, high] in the [csv] table\n"


# --- CSV files a spreadsheet or another system wrote ------------------------------------------
def _csv_node(tmp_path: Path, cohort: list[Path], name: str, write, csv_table: str = "") -> Path:
    """A node over the first hospital's rows written by ``write(frame, path)``, as CSV."""
    frame = pd.read_parquet(cohort[0].with_suffix(".parquet")).head(60)
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / f"{name}.csv"
    write(frame, data)
    desc_text = cohort[0].read_text(encoding="utf-8")
    lines = []
    for line in desc_text.splitlines():
        if line.startswith("file = "):
            line = f'file = "{data.as_posix()}"'
        elif line.startswith("format = "):
            line = 'format = "csv"'
        lines.append(line)
    desc = tmp_path / f"{name}.toml"
    desc.write_text("\n".join(lines) + "\n" + csv_table, encoding="utf-8")
    return write_node_file(tmp_path / f"node_{name}.toml", name="h", descriptors=[desc])


def _check(node: Path) -> tuple[int, list[str]]:
    """`node check`'s exit code and the cause lines it prints under a dataset that FAILED."""
    r = runner.invoke(app, ["node", "check", str(node)])
    causes: list[list[str]] = []
    under_failed = False
    for line in r.output.splitlines():
        if line.startswith("    ") and under_failed:
            causes[-1].append(line.strip())
        else:
            under_failed = line.rstrip().endswith(": FAILED")
            if under_failed:
                causes.append([])
    return r.exit_code, [" ".join(c) for c in causes]


def _utf16(frame: pd.DataFrame, path: Path) -> None:
    path.write_text(frame.to_csv(index=False), encoding="utf-16")


def _semicolon(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, sep=";", decimal=",")


def _ragged(frame: pd.DataFrame, path: Path) -> None:
    lines = frame.to_csv(index=False).splitlines()
    lines[7] += ",1,2"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "write", "expected", "fix"),
    [
        ("utf16", _utf16, 'set [csv] encoding = "utf-16"', '[csv]\nencoding = "utf-16"\n'),
        ("semicolon", _semicolon, 'set [csv] delimiter = ";"', None),
        ("ragged", _ragged, "line 8 has 22 fields, the header has 20", None),
    ],
)
def test_an_unreadable_csv_gives_one_line_naming_the_fix(
    tmp_path: Path, cohort: list[Path], name: str, write, expected: str, fix: str | None
) -> None:
    code, lines = _check(_csv_node(tmp_path, cohort, name, write))
    assert code == 1  # a check failed (node check goes on to the node's other datasets)
    assert len(lines) == 1 and expected in lines[0], lines
    assert "sniff" not in lines[0].lower() and f"{name}.csv" in lines[0]
    if fix is not None:
        code, lines = _check(_csv_node(tmp_path / "fixed", cohort, name, write, fix))
        assert code == 0 and lines == []


def test_a_semicolon_csv_with_decimal_commas_loads_with_its_two_options(
    tmp_path: Path, cohort: list[Path]
) -> None:
    step1 = _csv_node(tmp_path / "a", cohort, "semi", _semicolon, '[csv]\ndelimiter = ";"\n')
    code, lines = _check(step1)
    assert code == 1 and len(lines) == 1, lines
    assert "numbers are written with a decimal comma" in lines[0]
    assert 'set [csv] decimal = ","' in lines[0]
    both = '[csv]\ndelimiter = ";"\ndecimal = ","\n'
    code, lines = _check(_csv_node(tmp_path / "b", cohort, "semi", _semicolon, both))
    assert code == 0 and lines == []

    from healthfed.node.runtime import Node

    node = Node.from_toml(tmp_path / "b" / "node_semi.toml")
    ds = node.datasets["covid"]
    assert ds.n_rows == 60 and ds.descriptor.csv_decimal == ","


def test_a_missing_value_marker_names_na_values(tmp_path: Path, cohort: list[Path]) -> None:
    def dotted(frame: pd.DataFrame, path: Path) -> None:
        frame = frame.astype({"crp": object})
        frame.loc[3, "crp"] = "."
        frame.to_csv(path, index=False)

    code, lines = _check(_csv_node(tmp_path, cohort, "dotted", dotted))
    assert code == 1 and len(lines) == 1
    assert "column 'crp'" in lines[0] and "add it to [csv] na_values" in lines[0]
    fix = '[csv]\nna_values = ["", "NA", "."]\n'
    code, lines = _check(_csv_node(tmp_path / "fixed", cohort, "dotted", dotted, fix))
    assert code == 0 and lines == []
