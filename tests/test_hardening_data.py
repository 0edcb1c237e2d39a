"""Issue 12, data and CLI: every bad input file or flag is one clear line naming the file, line and
field; never a traceback, never a silently altered value, never a bare NaN in results.json."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data.features import attributes_json
from vitrina.data.idmap import IdMap
from vitrina.data.loaders import load_table
from vitrina.errors import DataValidationError
from vitrina.models.popular import Popular

runner = CliRunner()
HEADER = "user_id,item_id,timestamp\n"


def _csv(tmp_path: Path, body: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def _refusal(path: Path, fmt: str = "csv") -> str:
    with pytest.raises(DataValidationError) as info:
        load_table(path, format=fmt)  # type: ignore[arg-type]
    return str(info.value)


# --------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("1,1,1000\n1,2,abc\n1,3,1002\n", "line 3, field 'timestamp': cannot parse 'abc'"),
        ("1,1,1000\n1,2,nan\n", "line 3, field 'timestamp': expected a finite Unix time, got 'nan'"),
        ("1,1,1000\n1,2,-inf\n", "line 3, field 'timestamp': expected a finite Unix time, got '-inf'"),
        ("1,1,abc\n1,2,1000\n", "line 2, field 'timestamp': cannot parse 'abc'"),
        ("1,1,2020-01-01\n1,2,2020-13-45\n", "line 3, field 'timestamp': cannot parse '2020-13-45'"),
    ],
)
def test_bad_text_timestamp_names_its_line(tmp_path: Path, rows: str, expected: str) -> None:
    assert expected in _refusal(_csv(tmp_path, HEADER + rows))


def test_mixed_unix_and_iso_names_both_lines(tmp_path: Path) -> None:
    message = _refusal(_csv(tmp_path, HEADER + "1,1,2020-01-01\n1,2,2020-01-02\n1,3,1000\n"))
    assert "line 4" in message and "first at line 4: '1000'" in message
    assert "first at line 2: '2020-01-01'" in message and "use one kind" in message


def test_iso_layouts_may_differ_between_rows(tmp_path: Path) -> None:
    df = load_table(
        _csv(tmp_path, HEADER + "1,1,2020-01-01\n1,2,2020-01-01T00:00:10Z\n1,3,2020-01-01 00:01\n")
    )
    assert df["timestamp"].to_list() == [1577836800, 1577836810, 1577836860]


def test_parquet_string_and_out_of_range_columns(tmp_path: Path) -> None:
    """A Parquet file has rows, not lines: errors count data rows from 1 (issue 12)."""
    path = tmp_path / "t.parquet"
    pl.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": ["1000", "x"]}).write_parquet(path)
    assert "t.parquet, row 2, field 'timestamp': cannot parse 'x'" in _refusal(path, "parquet")
    mixed = ["2020-01-01", "1000", "1001"]
    pl.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": mixed}).write_parquet(path)
    message = _refusal(path, "parquet")
    assert "row 2" in message and "first at row 1: '2020-01-01'" in message and "line" not in message
    pl.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1.0, float("nan")]}).write_parquet(path)
    assert "row 2, field 'timestamp': expected a finite number, got nan" in _refusal(path, "parquet")
    for bad in (float("inf"), 1e30, 0.5):
        pl.DataFrame({"user_id": [1, 2], "item_id": [1.0, bad], "timestamp": [1, 2]}).write_parquet(path)
        assert "row 2, field 'item_id'" in _refusal(path, "parquet")
    ids = pl.Series([1, 2**63 + 5], dtype=pl.UInt64)
    pl.DataFrame({"user_id": ids, "item_id": [1, 2], "timestamp": [1, 2]}).write_parquet(path)
    assert "row 2, field 'user_id': integer id 9223372036854775813 is beyond" in _refusal(path, "parquet")
    pl.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [1]}).clear().write_parquet(path)
    assert "no data rows" in _refusal(path, "parquet")


# --------------------------------------------------------------------------- file-level problems
def test_file_problems_are_named(tmp_path: Path) -> None:
    assert "no data rows" in _refusal(_csv(tmp_path, HEADER))
    assert "empty file" in _refusal(_csv(tmp_path, "\n\n"))
    assert "is a directory" in _refusal(tmp_path)
    assert "file not found" in _refusal(tmp_path / "nope.csv")
    assert "not a valid gzip file" in _refusal(_csv(tmp_path, b"not gzip", "a.csv.gz"))
    truncated = gzip.compress((HEADER + "1,1,1\n" * 100).encode())[:30]
    assert "not a valid gzip file" in _refusal(_csv(tmp_path, truncated, "b.csv.gz"))
    assert "line 3: not valid utf-8 text" in _refusal(
        _csv(tmp_path, HEADER.encode() + b"1,1,1\n\xff\xfe,1,2\n")
    )
    assert "line 2: contains a NUL byte" in _refusal(_csv(tmp_path, HEADER + "1,\x00,1\n"))
    assert "column 'a' appears twice" in _refusal(_csv(tmp_path, "a,a,b\n1,2,3\n"))


def test_ragged_rows_name_the_physical_line(tmp_path: Path) -> None:
    short = _refusal(_csv(tmp_path, HEADER + "1,1,1\n\n1,2\n"))
    assert "line 4: expected 3 fields (user_id, item_id, timestamp)" in short and "got 2" in short
    assert "line 3: expected 3 fields" in _refusal(_csv(tmp_path, HEADER + "1,1,1\n1,2,3,4\n"))
    # a quoted newline: the record after it starts two lines further down
    quoted = _refusal(_csv(tmp_path, HEADER + '1,"a\nb",1\n1,2,x\n'))
    assert "line 4, field 'timestamp': cannot parse 'x'" in quoted
    assert "line 4: expected 3 fields" in _refusal(_csv(tmp_path, HEADER + '1,"a\nb",1\n1,2\n'))


def test_ids_are_kept_byte_for_byte(tmp_path: Path) -> None:
    df = load_table(_csv(tmp_path, HEADER + "é,[/x],1\n\u00e9,x\u2028y,2\n"))
    assert df["user_id"].to_list() == ["é", "é"] and df["item_id"].to_list() == ["[/x]", "x\u2028y"]


def test_crlf_bom_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    df = load_table(_csv(tmp_path, "\ufeff" + HEADER.replace("\n", "\r\n") + "1,1,1\r\n\r\n2,2,2\r\n"))
    assert df.select("user_id", "item_id", "timestamp").rows() == [(1, 1, 1), (2, 2, 2)]


# --------------------------------------------------------------------------- fuzzing the parsers
_cell = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters='",\n\r'), max_size=6),
    st.sampled_from(
        ["nan", "inf", "-1", "1e30", "2020-01-01", "1.5", "", " ", "[/x]", "18446744073709551615"]
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_cell, min_size=1, max_size=4), min_size=0, max_size=6), quote=st.booleans())
def test_fuzz_csv_either_loads_or_refuses_clearly(tmp_path: Path, rows: list[list[str]], quote: bool) -> None:
    """Any table of cells: a validated frame or a DataValidationError naming the file, nothing else."""
    q = (lambda c: '"' + c + '"') if quote else (lambda c: c)
    body = HEADER + "".join(",".join(q(c) for c in row) + "\n" for row in rows)
    path = _csv(tmp_path, body)
    try:
        df = load_table(path)
    except DataValidationError as exc:
        assert str(path) in str(exc)
    else:
        assert df.height == sum(1 for r in rows if any(c.strip() for c in r))
        assert df["timestamp"].dtype in (pl.Int64, pl.Float64)
        assert df["timestamp"].cast(pl.Float64).is_finite().all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_fuzz_csv_arbitrary_bytes(tmp_path: Path, raw: bytes) -> None:
    path = _csv(tmp_path, HEADER.encode() + raw)
    with contextlib.suppress(DataValidationError):  # refusing is fine; any other exception fails
        load_table(path)


_column = st.sampled_from(
    [
        pl.Series([1, 2, 3]),
        pl.Series([1.0, float("nan"), 3.0]),
        pl.Series([1.0, float("inf"), 2.0]),
        pl.Series([1e30, 2.0, 3.0]),
        pl.Series(["a", "b", ""]),
        pl.Series(["1", "x", "2020-01-01"]),
        pl.Series([True, False, True]),
        pl.Series([1, None, 3]),
        pl.Series([1, 2**63 + 1, 3], dtype=pl.UInt64),
        pl.Series([[1], [2], [3]]),
        pl.Series([b"a", b"b", b"c"]),
        pl.Series([-1.0, 2.0, 3.0]),
    ]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=_column, item=_column, ts=_column, weight=st.one_of(st.none(), _column))
def test_fuzz_parquet_columns(
    tmp_path: Path, user: pl.Series, item: pl.Series, ts: pl.Series, weight: pl.Series | None
) -> None:
    cols = {"user_id": user, "item_id": item, "timestamp": ts}
    if weight is not None:
        cols["weight"] = weight
    path = tmp_path / "t.parquet"
    pl.DataFrame(cols).write_parquet(path)
    try:
        df = load_table(path)
    except DataValidationError as exc:
        assert str(path) in str(exc)
    else:
        assert df["timestamp"].cast(pl.Float64).is_finite().all()
        assert df["weight"].is_finite().all() and (df["weight"] >= 0).all()


# --------------------------------------------------------------------------- the CLI boundary
def _cli(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        "t.csv": (HEADER + "1,1,1000\n1,2,abc\n", "line 3, field 'timestamp'"),
        "h.csv": (HEADER, "no data rows"),
        "one.csv": (HEADER + "1,1,1000\n", "no user can be evaluated"),
        "[bold]x[red].csv": (HEADER + "1,[/x],1\n1,[/x],2\n", "no user can be evaluated"),
    }
    for name, (body, expected) in cases.items():
        path = _csv(tmp_path, body, name)
        code, out = _cli(["benchmark", "--dataset", str(path), "--format", "csv", "--models", "popular"])
        assert code == 2, out
        assert out.strip().startswith("error: ") and len(out.strip().splitlines()) == 1, out
        assert expected in out
    code, out = _cli(
        ["benchmark", "--dataset", str(tmp_path / "[/x].csv"), "--format", "csv", "--models", "popular"]
    )
    assert code == 2 and "[/x].csv: file not found" in out


def test_cli_filters_that_drop_everything(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,item_id,timestamp,weight\n1,1,1,1\n1,2,2,2\n2,1,1,1\n")
    base = ["benchmark", "--dataset", str(path), "--format", "csv", "--models", "popular"]
    code, out = _cli([*base, "--implicit-threshold", "5"])
    assert code == 2 and "implicit_threshold=5.0 keeps no event (weights range from 1.0 to 2.0)" in out
    code, out = _cli([*base, "--min-user", "9"])
    assert code == 2 and "k-core filter (min_user=9, min_item=None) leaves no event" in out


def test_cli_bad_paths_and_flags(tmp_path: Path) -> None:
    data = _csv(tmp_path, HEADER + "1,1,1\n1,2,2\n2,1,1\n2,2,3\n")
    afile = _csv(tmp_path, "x", "afile")
    binary = _csv(tmp_path, bytes(range(256)), "bin.toml")
    base = ["benchmark", "--dataset", str(data), "--format", "csv", "--models", "popular"]
    code, out = _cli([*base, "--output", str(afile)])
    assert code == 2 and "exists and is not a folder" in out
    code, out = _cli([*base, "--config", str(binary)])
    assert code == 2 and "not a TOML text file" in out
    code, out = _cli(
        ["train", "--dataset", str(data), "--format", "csv", "--model", "popular", "--output", str(afile)]
    )
    assert code == 2 and "exists and is not a folder" in out
    code, out = _cli(["datasets", "download", "ml-100k", "--url", "not a url", "--home", str(tmp_path)])
    assert code == 2 and "is not an http://, https:// or file:// address" in out
    code, out = _cli(["datasets", "download", "ml-100k", "--url", "http://x:port/", "--home", str(tmp_path)])
    assert code == 2 and "cannot fetch" in out


def test_cli_train_refuses_empty_data(tmp_path: Path) -> None:
    code, out = _cli(
        [
            "train",
            "--dataset",
            str(_csv(tmp_path, HEADER)),
            "--format",
            "csv",
            "--model",
            "popular",
            "--output",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2 and "no data rows" in out and not (tmp_path / "m").exists()
    with pytest.raises(DataValidationError, match="no interactions to learn from"):
        Popular().fit(pl.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [1]}).clear())


def test_cli_unexpected_error_is_one_line_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import vitrina.evaluation.benchmark as bench

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("[bold]division[/bold] by zero")

    monkeypatch.setattr(bench, "run_benchmark", broken)
    code, out = _cli(["benchmark", "--dataset", "ml-100k", "--models", "popular"])
    assert code == 1 and "Traceback" not in out
    assert "unexpected ZeroDivisionError: [bold]division[/bold] by zero" in out and "--debug" in out
    result = runner.invoke(app, ["--debug", "benchmark", "--dataset", "ml-100k", "--models", "popular"])
    assert isinstance(result.exception, ZeroDivisionError)  # --debug lets the traceback through


def test_results_json_is_strict_json(tmp_path: Path) -> None:
    """A metric undefined for the data is null, not a bare NaN that JSON parsers reject."""
    from vitrina.evaluation.benchmark import write_results

    results = {
        "dataset": "d",
        "split": "loo",
        "k": 10,
        "seed": 0,
        "runs": [
            {
                "model": "popular",
                "params": {},
                "fit_seconds": 0.0,
                "recommend_seconds": 0.0,
                "metrics": {"ndcg@10": 0.5, "coverage@10": 0.1, "ild@10": math.nan, "arp@10": math.inf},
            }
        ],
    }
    write_results(results, tmp_path / "out")
    text = (tmp_path / "out" / "results.json").read_text()
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    assert parsed["runs"][0]["metrics"]["ild@10"] is None and parsed["runs"][0]["metrics"]["arp@10"] is None


# --------------------------------------------------------------------------- metrics inputs
def test_attributes_are_one_hot_even_when_listed_twice(tmp_path: Path) -> None:
    path = tmp_path / "attrs.json"
    path.write_text(json.dumps({"1": [0, 2, 2], "2": [1]}))
    items = IdMap.from_values(pl.Series([1, 2]))
    m = attributes_json(path, items)
    assert np.array_equal(m.toarray(), [[1, 0, 1], [0, 1, 0]])
    path.write_text(json.dumps({"1": ["a"]}))
    with pytest.raises(DataValidationError, match="item 1: expected non-negative integer attribute ids"):
        attributes_json(path, items)


def test_quoted_csv_matches_unquoted(tmp_path: Path) -> None:
    plain = load_table(_csv(tmp_path, HEADER + "1,1,1\n2,2,2\n", "p.csv"))
    quoted = load_table(
        _csv(tmp_path, '"user_id","item_id","timestamp"\n"1","1","1"\n"2","2","2"\n', "q.csv")
    )
    assert plain.equals(quoted)
