"""A new user's first hour on tables unlike the shipped one (tests/own_tables.py): `optiflow init`, a training run,
`optiflow predict` and the monitoring flow, all through the command line. Each table ends in a registered model or
a clear refusal with exit code 2, a refusal changes nothing that was there before, and 20 batches drawn from a
table's own distribution retrain nothing.

Run with ``-s`` to see the table of results (table x step x outcome) printed at the end.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import main
from optiflow.monitoring.batches import read_history
from optiflow.monitoring.retraining import RETRAINING_DECISIONS
from tests.conftest import CLASSICAL_FAMILIES, REPO, output_digests, registry_state
from tests.own_tables import credit, leaky, retail, write_duplicate_headers

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ROWS, BATCHES, BATCH_ROWS = 3000, 20, 1000
# A small search budget: these tests are about the tables, not the tuning.
QUICK = [
    "-S",
    "tune.n_trials=2",
    "-S",
    "tune.cv_folds=2",
    "-S",
    "explain.max_rows=200",
    "-S",
    "compress.measure.repeats=3",
]
RESULTS: list[tuple[str, str, str]] = []  # (table, step, outcome) for the printed table


def record(table: str, step: str, outcome: str) -> None:
    RESULTS.append((table, step, outcome))


def run(*argv: str) -> tuple[int, str, float]:
    """``optiflow ARGV`` in this process: exit code, what it printed (stdout and stderr), seconds."""
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(list(argv))
    return code, printed.getvalue(), time.perf_counter() - started


def _project(root: Path, name: str, frame: pd.DataFrame) -> tuple[Path, Path]:
    (root / "data").mkdir(parents=True)
    source = root / "data" / f"{name}.csv"
    frame.to_csv(source, index=False)
    return source, root / "params.yaml"


def _write_batches(root: Path, make, count: int = BATCHES) -> Path:
    """``count`` batches of fresh rows from the table's own generator (other seeds), labels included."""
    folder = root / "data" / "batches"
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        make(BATCH_ROWS, 1000 + number).to_csv(folder / f"{number + 1:03d}-same-distribution.csv", index=False)
    return folder


def _unchanged(params: Path, before: tuple[dict, dict]) -> bool:
    skip = ("data/", "params", "reports/validation-failures", ".optiflow-registry.lock", "predictions")
    return (output_digests(params.parent, skip), registry_state(params)) == before


def _snapshot(params: Path) -> tuple[dict, dict]:
    skip = ("data/", "params", "reports/validation-failures", ".optiflow-registry.lock", "predictions")
    return output_digests(params.parent, skip), registry_state(params)


@pytest.fixture(scope="module")
def credit_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """credit: init with the two sensitive columns declared, then a full training run (every family)."""
    source, params = _project(tmp_path_factory.mktemp("credit"), "credit", credit(ROWS, 1))
    code, out, _ = run("init", str(source), "--target", "risk", "--sensitive", "age,sex", "--params", str(params))
    assert code == 0, out
    written = yaml.safe_load(params.read_text())
    assert written["data"]["positive_label"] == "bad" and written["data"]["id_columns"] == ["applicant_id"]
    assert written["data"]["ignore_columns"] == ["application_date"]
    assert "age" in written["data"]["feature_types"]["numeric"] and written["validate"]["null_fraction"]["age"] > 0
    record("credit", "init", "params.yaml written: id applicant_id, date ignored, label 'bad', age numeric")
    code, out, _ = run("train", "--params", str(params), *QUICK)
    assert code == 0, out
    state = registry_state(params)
    assert state["versions"] == [1] and state["aliases"] == {"champion": "1"}, out
    record("credit", "train", "v1 registered and promoted (age binned at quartiles, missing age its own group)")
    return params


@pytest.fixture(scope="module")
def retail_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """retail: no sensitive column, so fairness is allowed to be not evaluated; the classical families only."""
    source, params = _project(tmp_path_factory.mktemp("retail"), "retail", retail(ROWS, 1))
    code, out, _ = run("init", str(source), "--target", "churned", "--params", str(params))
    assert code == 0, out
    assert "No sensitive features declared" in out
    written = yaml.safe_load(params.read_text())
    assert written["data"]["positive_label"] == 1 and "city" not in written["validate"]["domains"]
    assert written["monitor"]["drift_tests"]["city"]["method"] == "two_sample_chisquare"
    record("retail", "init", "params.yaml written: 60-value city without a domain, chi-square drift test for it")
    families = f"train.families={CLASSICAL_FAMILIES}"
    blocked = run("train", "--params", str(params), *QUICK, "-S", families)
    assert blocked[0] == 0 and registry_state(params)["aliases"] == {}
    assert "fairness equalized_odds_difference: not evaluated (no data.sensitive_features declared" in blocked[1]
    root = params.parent
    assert (root / "reports/runs/v1/run_report.html").is_file() and not (root / "reports/run_report.html").exists()
    record("retail", "train", "v1 registered, rejected: fairness not evaluated blocks by default (said how to allow)")
    allowed = run(
        "train", "--params", str(params), *QUICK, "-S", families, "-S", "gates.allow_not_evaluated=[fairness]"
    )
    assert allowed[0] == 0 and registry_state(params)["aliases"] == {"champion": "2"}, allowed[1]
    champion_page = (root / "reports/runs/v2/run_report.html").read_text()
    assert (root / "reports/run_report.html").read_text() == champion_page  # the latest: the champion's run
    record("retail", "train (allow_not_evaluated)", "v2 registered and promoted; fairness shown as not evaluated")
    (root / "reports/registration.json").unlink()  # register runs again on the same model, data and settings
    again = run("train", "--params", str(params), *QUICK, "-S", families, "-S", "gates.allow_not_evaluated=[fairness]")
    assert again[0] == 0 and "identical to registered v2" in again[1], again[1]
    assert registry_state(params)["versions"] == [1, 2]
    record("retail", "train again (register reran)", "identical to v2: no new version, aliases unchanged")
    return params


def test_credit_predict_scores_and_refuses_a_file_that_scores_nothing(credit_project: Path) -> None:
    root = credit_project.parent
    batch = root / "data" / "to-score.csv"
    credit(500, 77).drop(columns=["risk"]).to_csv(batch, index=False)
    code, out, _ = run("predict", "--params", str(credit_project), "--input", str(batch), "--output",
                       str(root / "predictions.csv"))  # fmt: skip
    assert code == 0 and pd.read_csv(root / "predictions.csv")["label"].isin(["good", "bad"]).all(), out
    record("credit", "predict", "500 rows scored with labels good/bad")
    broken = root / "data" / "broken.csv"
    credit(50, 78).drop(columns=["risk"]).assign(sex="unknown").to_csv(broken, index=False)
    before = _snapshot(credit_project)
    code, out, _ = run("predict", "--params", str(credit_project), "--input", str(broken), "--output",
                       str(root / "predictions-broken.csv"))  # fmt: skip
    assert code == 2 and "nothing was scored: all 50 rows were rejected" in out and "sex: 'unknown'" in out
    assert _unchanged(credit_project, before)
    record("credit", "predict (every row rejected)", "exit 2: nothing scored, the commonest reasons named")


def test_credit_monitoring_retrains_nothing_on_its_own_distribution(credit_project: Path) -> None:
    root = credit_project.parent
    _write_batches(root, credit)
    code, out, _ = run("monitor", "--params", str(credit_project))
    assert code == 0, out
    history = read_history(root / "reports/monitoring/history.csv")
    assert len(history) == BATCHES
    assert not history["decision"].isin(RETRAINING_DECISIONS).any(), history[["batch_id", "decision", "reason"]]
    assert (history["decision"] == "ignored").all(), history[["batch_id", "decision", "reason"]]
    assert registry_state(credit_project)["versions"] == [1]
    record("credit", f"monitor {BATCHES} batches", f"{BATCHES} ignored, 0 retrains (largest drift share "
           f"{history['drift_share'].max():.2f})")  # fmt: skip


def test_a_hidden_target_copy_is_refused_before_training_and_nothing_is_lost(credit_project: Path) -> None:
    root = credit_project.parent
    source = root / "data" / "leaky.csv"
    leaky(ROWS, 2).to_csv(source, index=False)
    other = root / "params-leaky.yaml"
    code, out, _ = run("init", str(source), "--target", "risk", "--params", str(other))
    assert code == 0 and "Leakage: collections_status" in out, out
    record("leaky", "init", "params written; warns collections_status gives the label away")
    before = _snapshot(credit_project)
    code, out, _ = run("train", "--params", str(other), *QUICK)
    assert code == 2 and "column 'collections_status': optiflow_feature_does_not_reveal_target" in out, out
    assert "a function of the target: " in out and "validate.allow_leakage" in out
    assert _unchanged(credit_project, before)
    record("leaky", "train", "exit 2 at ingest: a function of the target (AUC 1.000); credit's outputs untouched")


def test_misspelt_settings_are_all_named_before_prefect_starts(credit_project: Path) -> None:
    before = _snapshot(credit_project)
    started = time.perf_counter()
    done = subprocess.run(  # a fresh process, as from the shell: the time includes Python's start and imports
        [sys.executable, "-m", "flows", "train", "--params", str(credit_project),
         "-S", "data.sensitive_features=[age, sexx]", "-S", "evaluate.slices=[purpse]",
         "-S", "robustness.bounds={incme: {relative: 0.05}}", "-S", "data.groups.bins={agee: [30, 50]}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seconds, code, out = time.perf_counter() - started, done.returncode, done.stdout + done.stderr
    assert code == 2, out
    for line in (
        "data.sensitive_features: 'sexx' is not a column; did you mean 'sex'?",
        "evaluate.slices: 'purpse' is not a column; did you mean 'purpose'?",
        "robustness.bounds: 'incme' is not a column; did you mean 'income'?",
        "data.groups.bins: 'agee' is not a column; did you mean 'age'?",
    ):
        assert line in out
    assert "Traceback" not in out and _unchanged(credit_project, before)
    record("credit (misspelt settings)", "train", f"exit 2 in {seconds:.1f} s: 4 names, each with a did-you-mean")


def test_a_misspelt_command_gets_a_suggestion(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'trian'" in error and "did you mean 'train'?" in error


def test_retail_predict_and_a_single_segment_batch(retail_project: Path) -> None:
    root = retail_project.parent
    batch = root / "data" / "north-only.csv"
    one_region = retail(BATCH_ROWS, 500).assign(region="north").drop(columns=["churned"])  # a legitimate batch
    one_region.to_csv(batch, index=False)
    code, out, _ = run("predict", "--params", str(retail_project), "--input", str(batch), "--output",
                       str(root / "predictions.parquet"))  # fmt: skip
    assert code == 0 and len(pd.read_parquet(root / "predictions.parquet")) == BATCH_ROWS, out
    record("retail", "predict", f"{BATCH_ROWS} rows of one region scored")
    code, out, _ = run("monitor", "--params", str(retail_project), "--batches", "data/north-only.csv")
    (row,) = read_history(root / "reports/monitoring/history.csv").to_dict("records")
    # unlabelled: nothing to retrain on yet (its drift without an estimated drop is an alert, not a retrain)
    assert code == 0 and row["decision"] in ("ignored", "debounced", "alert"), out
    assert row["drifted_columns"] == "region", row  # the one thing that changed, and it is drift, not bad data
    assert registry_state(retail_project)["versions"] == [1, 2]
    record("retail", "monitor one-region batch", f"valid; region drift found, {row['decision']} (no labels)")


def test_retail_monitoring_retrains_nothing_on_its_own_distribution(retail_project: Path) -> None:
    root = retail_project.parent
    folder = _write_batches(root, retail)
    code, out, _ = run("monitor", "--params", str(retail_project), "--batches", str(folder.relative_to(root)))
    assert code == 0, out
    history = read_history(root / "reports/monitoring/history.csv")
    ours = history[history["batch_id"].str.endswith("same-distribution")]
    assert len(ours) == BATCHES and not ours["decision"].isin(RETRAINING_DECISIONS).any(), ours
    assert (ours["decision"] == "ignored").all(), ours[["batch_id", "decision", "reason"]]
    assert registry_state(retail_project)["versions"] == [1, 2]
    record("retail", f"monitor {BATCHES} batches", f"{BATCHES} ignored, 0 retrains (largest drift share "
           f"{ours['drift_share'].max():.2f})")  # fmt: skip


def test_duplicate_headers_are_refused_in_training_scoring_and_monitoring(retail_project: Path) -> None:
    root = retail_project.parent
    dupes = write_duplicate_headers(retail(ROWS, 3), root / "data" / "dupes.csv", "spend")
    before = _snapshot(retail_project)
    steps = {
        "init": ["init", str(dupes), "--target", "churned", "--params", str(root / "params-dupes.yaml")],
        "train": ["train", "--params", str(retail_project), "-S", "data.source=data/dupes.csv"],
        "predict": ["predict", "--params", str(retail_project), "--input", str(dupes), "--output", str(root / "x.csv")],
        "monitor": ["monitor", "--params", str(retail_project), "--batches", "data/dupes.csv"],
    }
    for step, argv in steps.items():
        code, out, _ = run(*argv)
        assert code == 2 and "column name(s) ['spend'] appear more than once in the header" in out, (step, out)
        assert "Traceback" not in out
        record("retail with duplicate headers", step, "exit 2: 'spend' appears twice in the header")
    assert _unchanged(retail_project, before) and not (root / "params-dupes.yaml").exists()


def test_print_the_table_of_results() -> None:
    """The table of results (table x step x outcome), printed for the issue note (run with -s)."""
    assert RESULTS, "run the whole file: the other tests fill the table"
    width = max(len(table) for table, _, _ in RESULTS), max(len(step) for _, step, _ in RESULTS)
    lines = [
        f"| {'table':<{width[0]}} | {'step':<{width[1]}} | outcome |",
        f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|---|",
    ]
    lines += [f"| {table:<{width[0]}} | {step:<{width[1]}} | {outcome} |" for table, step, outcome in RESULTS]
    print("\n" + "\n".join(lines))
