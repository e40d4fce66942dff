"""Reading and typing the source: the shipped data's quirks and every unreadable file named clearly."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from optiflow.config import parse_params
from optiflow.data.ingest import check_header, coerce, load_dataset, read_header, read_source
from optiflow.data.schema import resolve_schema
from optiflow.errors import DataError, IntegrityError
from tests.conftest import SHIPPED_DATA, shipped_params


@pytest.fixture
def data_params():
    return parse_params(shipped_params()).data


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path: Path, data_params) -> None:
    copy = tmp_path / "churn.csv.gz"
    copy.write_bytes(SHIPPED_DATA.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"churn.csv.gz: sha256 is [0-9a-f]{64}, but params.yaml"):
        load_dataset(copy, data_params)


def test_numbers_written_as_text_are_named(tmp_path: Path, data_params) -> None:
    frame = pd.read_csv(SHIPPED_DATA).head(50)
    frame["total_charges"] = frame["total_charges"].map(lambda v: f"{v:,.2f}")
    frame.loc[0, "total_charges"] = "1,889.50"
    with pytest.raises(
        DataError,
        match=r"column 'total_charges' is declared numeric but \d+ value\(s\) are not numbers, e.g. \['1,889.50'",
    ):
        coerce(frame, data_params, tmp_path / "x.csv")


def test_missing_columns_listed_with_the_undeclared_ones(data_params, tmp_path: Path) -> None:
    frame = pd.read_csv(SHIPPED_DATA).head(5).rename(columns={"tenure": "tenure_months"}).drop(columns=["churn"])
    with pytest.raises(
        DataError, match=r"missing required column\(s\) \['churn', 'tenure'\].*not declared: \['tenure_months'\]"
    ):
        coerce(frame, data_params, tmp_path / "x.csv")


def test_extra_columns_of_a_batch_are_dropped(data_params, tmp_path: Path) -> None:
    frame = pd.read_csv(SHIPPED_DATA).head(5).assign(notes="x")
    assert "notes" not in coerce(frame, data_params, tmp_path / "x.csv").columns


def test_an_undeclared_column_of_a_training_table_stops_unless_ignored_by_name(data_params, tmp_path: Path) -> None:
    frame = pd.read_csv(SHIPPED_DATA).head(5).assign(notes="x", churn_v2=lambda f: f["churn"])
    with pytest.raises(DataError, match=r"x.csv: undeclared column\(s\) \['churn_v2', 'notes'\]: name them in"):
        coerce(frame, data_params, tmp_path / "x.csv", undeclared="stop")
    allowed = data_params.model_copy(update={"ignore_columns": ("notes", "churn_v2")})
    assert "notes" not in coerce(frame, allowed, tmp_path / "x.csv", undeclared="stop").columns


def test_a_missing_column_gets_the_closest_spelling(data_params, tmp_path: Path) -> None:
    frame = pd.read_csv(SHIPPED_DATA).head(5).rename(columns={"tenure": "Tenure", "contract": "contrcat"})
    with pytest.raises(DataError, match=r"\(did you mean 'Tenure' for 'tenure', 'contrcat' for 'contract'\?\)"):
        coerce(frame, data_params, tmp_path / "x.csv")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_a_repeated_column_name_is_refused_naming_it(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dupes{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table([[1, 2], [3, 4], ["a", "b"]], names=["age", "age", "y"]), path)
    else:
        text = b"age,income,age,y\n1,2,3,a\n4,5,6,b\n"
        path.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    with pytest.raises(DataError, match=r"dupes.* column name\(s\) \['age'\] appear more than once"):
        read_source(path)
    assert read_header(path) == (["age", "age", "y"] if suffix == ".parquet" else ["age", "income", "age", "y"])


def test_a_single_column_that_is_another_delimiter_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("age;income;y\n1;2;a\n")
    with pytest.raises(DataError, match=r"semi.csv: read as a single column 'age;income;y'.*looks ';'-delimited"):
        check_header(read_header(path), path)


def test_schema_inferred_when_not_declared(data_params) -> None:
    frame = pd.DataFrame({"churn": ["Yes", "No"], "age": [1.5, 2.0], "plan": ["a", "b"], "flag": [True, False]})
    schema = resolve_schema(frame, data_params.model_copy(update={"feature_types": None}))
    assert schema.numeric == ("age",) and schema.categorical == ("plan", "flag")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"churn,tenure\n", "has a header but no rows"),
        (gzip.compress(b"churn,tenure\nYes,1\n" * 200)[:60], "truncated or corrupt"),
        ("churn,tenure\nYes,1\nNo,\xe9\n".encode("latin-1"), "not UTF-8 text"),
    ],
    ids=["empty", "header-only", "truncated-gzip", "latin-1"],
)
def test_unreadable_files_give_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / ("data.csv.gz" if content[:2] == b"\x1f\x8b" else "data.csv")
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_source(path)


def test_missing_file(tmp_path: Path, data_params) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: data source not found"):
        load_dataset(tmp_path / "nope.csv", data_params)


def test_parquet_source(tmp_path: Path, data_params) -> None:
    path = tmp_path / "churn.parquet"
    pd.read_csv(SHIPPED_DATA).to_parquet(path)
    frame, _ = load_dataset(path, data_params.model_copy(update={"sha256": None}))
    assert len(frame) == 7043
