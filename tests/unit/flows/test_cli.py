"""The command line a newcomer meets first: `optiflow init`, settings checked before Prefect starts, no files made
before a model exists, quiet project-local defaults, did-you-mean, and output that stays plain when piped."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import _local_and_quiet, main
from flows.summary import nothing_scored, print_training_summary
from optiflow.config import parse_params
from optiflow.preflight import column_problems
from tests.conftest import REPO, make_project
from tests.own_tables import credit, retail, write_duplicate_headers


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m flows ARGV` in a fresh process (what a user's shell runs)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("PREFECT_HOME", "MPLCONFIGDIR")}
    return subprocess.run(
        [sys.executable, "-m", "flows", *argv],
        cwd=cwd,
        env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def credit_csv(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "credit.csv"
    credit(600, 1).to_csv(path, index=False)
    return path


def test_init_writes_settings_that_fit_the_table_and_pass_every_check(credit_csv: Path, capsys) -> None:
    params = credit_csv.parent.parent / "params.yaml"
    assert main(["init", str(credit_csv), "--target", "risk", "--sensitive", "age,sex", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "application_date" in out and "dates or times: not a feature" in out and "sensitive (declared)" in out
    written = yaml.safe_load(params.read_text())
    data = written["data"]
    assert data["source"] == "data/credit.csv" and (data["positive_label"], data["negative_label"]) == ("bad", "good")
    assert data["id_columns"] == ["applicant_id"] and data["ignore_columns"] == ["application_date"]
    assert data["sensitive_features"] == ["age", "sex"]
    assert set(data["feature_types"]["numeric"]) == {"age", "income", "loan_amount", "duration_months"}
    assert written["validate"]["domains"]["housing"] == ["free", "own", "rent"]
    assert written["robustness"]["bounds"]["age"] == {"absolute": 1}  # whole years over a wide range: one unit
    assert written["register"]["model_name"] == "optiflow-credit"
    assert {scenario["kind"] for scenario in written["simulate"]["scenarios"]} == {"scale", "mix", "segment"}
    assert set(written["monitor"]["drift_tests"]) == {"age", "income", "loan_amount", "duration_months", "sex",
                                                      "purpose", "housing"}  # fmt: skip
    assert column_problems(parse_params(written), list(credit(5, 1).columns)) == []
    keyed = [*credit(5, 1).columns, "row_key", "row_role"]  # a retraining set's bookkeeping is never a feature
    assert column_problems(parse_params(written), keyed) == []
    (stray,) = column_problems(parse_params(written), [*keyed, "stray"])
    assert "columns ['stray'] are in the data but no setting names them" in stray
    for group in ("seed", "split", "tune", "train", "compress", "evaluate", "fairness", "explain", "gates"):
        assert group in written, group  # every group a stage reads, for DVC


def test_init_never_guesses_sensitive_features_but_names_the_candidates(credit_csv: Path, capsys) -> None:
    params = credit_csv.parent.parent / "params.yaml"
    assert main(["init", str(credit_csv), "--target", "risk", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(params.read_text())["data"]["sensitive_features"] == []
    assert "No sensitive features declared" in out and "columns whose names suggest one: age, sex" in out
    assert "gates.allow_not_evaluated: [fairness]" in out


def test_init_refuses_to_overwrite_a_hand_edited_file_and_shows_the_diff(credit_csv: Path, capsys) -> None:
    params = credit_csv.parent.parent / "params.yaml"
    argv = ["init", str(credit_csv), "--target", "risk", "--params", str(params)]
    assert main(argv) == 0
    first = params.read_text()
    assert main(argv) == 0 and params.read_text() == first  # its own file: rewritten, unchanged
    params.write_text(first.replace("min_rows: 300", "min_rows: 250"))
    edited = params.read_text()
    capsys.readouterr()
    assert main([*argv[:-2], "--sensitive", "sex", "--params", str(params)]) == 2
    error = capsys.readouterr().err
    assert "was edited by hand" in error and "--force" in error
    assert "-  min_rows: 250" in error and "+  sensitive_features: [sex]" in error
    assert params.read_text() == edited
    assert main([*argv, "--force"]) == 0 and "min_rows: 300" in params.read_text()
    shipped = credit_csv.parent.parent / "shipped.yaml"
    shipped.write_text((REPO / "params.yaml").read_text())  # a hand-written file: never overwritten silently
    assert main(["init", str(credit_csv), "--target", "risk", "--params", str(shipped)]) == 2


def test_init_refuses_tables_it_cannot_use_with_one_clear_line(tmp_path: Path, capsys) -> None:
    dupes = write_duplicate_headers(retail(200, 1), tmp_path / "dupes.csv", "spend")
    assert main(["init", str(dupes), "--target", "churned", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "column name(s) ['spend'] appear more than once in the header" in capsys.readouterr().err
    table = tmp_path / "r.csv"
    retail(200, 1).assign(churned=lambda f: f["churned"] + (f.index % 3 == 0)).to_csv(table, index=False)
    assert main(["init", str(table), "--target", "churnd", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "no column 'churnd' to predict; did you mean 'churned'?" in capsys.readouterr().err
    assert main(["init", str(table), "--target", "churned", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "must hold exactly two labels, found 3" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_misspelt_column_settings_stop_training_before_prefect_starts(credit_csv: Path) -> None:
    root = credit_csv.parent.parent
    assert _cli("init", "data/credit.csv", "--target", "risk", cwd=root).returncode == 0
    done = _cli("train", "-S", "data.sensitive_features=[agee]", "-S", "evaluate.slices=[housng]", cwd=root)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "data.sensitive_features: 'agee' is not a column; did you mean 'age'?" in done.stderr
    assert "evaluate.slices: 'housng' is not a column; did you mean 'housing'?" in done.stderr
    assert not (root / ".prefect").exists()  # no Prefect state: it never started


def test_scoring_and_status_before_any_model_say_so_and_create_nothing(credit_csv: Path) -> None:
    root = credit_csv.parent.parent
    assert main(["init", str(credit_csv), "--target", "risk", "--params", str(root / "params.yaml")]) == 0
    before = sorted(path.name for path in root.iterdir())
    commands = [
        ("predict", "--input", "data/credit.csv", "--output", "out.csv"),
        ("status",),
        ("monitor",),
        ("release", "status"),
    ]
    with ThreadPoolExecutor(len(commands)) as pool:  # four fresh processes, started at once
        finished = list(pool.map(lambda argv: _cli(*argv, cwd=root), commands))
    for argv, done in zip(commands, finished, strict=True):
        assert done.returncode == 2 and "no champion yet" in done.stderr and "run `make run`" in done.stderr, argv
    assert sorted(path.name for path in root.iterdir()) == before  # no mlflow.db, no .prefect


def test_the_cli_keeps_state_in_the_project_and_logs_quiet_unless_asked(tmp_path: Path, monkeypatch) -> None:
    for name in ("PREFECT_HOME", "MPLCONFIGDIR", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    _local_and_quiet(tmp_path, verbose=0)
    assert os.environ["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    _local_and_quiet(tmp_path, verbose=1)
    assert os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "INFO"
    monkeypatch.setenv("PREFECT_HOME", "/elsewhere")
    _local_and_quiet(tmp_path, verbose=0)
    assert os.environ["PREFECT_HOME"] == "/elsewhere"  # a value the user set wins


def test_a_misspelt_command_or_stage_gets_the_closest_one(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate-drfit"])
    assert exit_.value.code == 2 and "did you mean 'simulate-drift'?" in capsys.readouterr().err
    assert main(["stage", "evalute", "--params", str(REPO / "params.yaml")]) == 2
    assert "did you mean 'evaluate'?" in capsys.readouterr().err


def test_piped_output_is_plain_and_not_cut_to_80_columns(capsys) -> None:
    gate = {"gate": "fairness", "metric": "equalized_odds_difference[a_long_sensitive_feature & another_one]",
            "observed": None, "threshold": 0.3, "comparison": "<=", "passed": False, "evaluated": False,
            "detail": "fewer than 2 groups"}  # fmt: skip
    results = [
        {"stage": "ingest", "state": "Completed"},
        {
            "stage": "evaluate",
            "state": "Cached",
            "selected": "lr",
            "test": dict.fromkeys(("roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier"), 0.5),
        },
        {"stage": "fairness", "state": "Cached", "passed": False, "failures": ["x"], "mitigated": False},
        {
            "stage": "register",
            "state": "Completed",
            "version": "3",
            "model_name": "m",
            "alias": "champion",
            "run_report": "reports/runs/v3/run_report.html",
            "tracking_uri": "sqlite:///mlflow.db",
            "decision": {
                "promote": False,
                "champion_version": "1",
                "previous_version": None,
                "reason": "blocked",
                "gates": {"results": [gate]},
            },
        },
    ]
    print_training_summary(results)
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "equalized_odds_difference[a_long_sensitive_feature & another_one]" in out
    assert "not evaluated" in out and "Training run: 2 stage(s) ran (ingest, register), 2 cached" in out
    assert "reports/run_report.html still shows the champion's run" in out


def test_nothing_scored_names_the_commonest_reasons(tmp_path: Path) -> None:
    rejects = tmp_path / "out.rejects.csv"
    pd.DataFrame({"row": [0, 1, 2], "reason": ["sex: missing", "sex: missing; age: -1 outside [0, None]", "x"]}).to_csv(
        rejects, index=False
    )
    summary = {"rows_read": 3, "rows_scored": 0, "output": "out.csv", "rejects": str(rejects)}
    message = nothing_scored(summary)
    assert message.startswith("nothing was scored: all 3 rows were rejected; most common reasons: 'sex: missing' (2")
    assert nothing_scored({**summary, "rows_read": 0}).endswith("the input holds no rows")
    assert nothing_scored({**summary, "rows_scored": 1}) is None


def test_an_approval_names_a_flow_run_by_its_id(capsys) -> None:
    assert main(["approve", "not-a-run", "--params", str(REPO / "params.yaml")]) == 2
    assert "'not-a-run' is not a flow run id" in capsys.readouterr().err


def test_feedback_stores_a_labels_file_and_refuses_a_bad_one_in_one_line(
    tmp_path: Path, churn_sample: pd.DataFrame, capsys
) -> None:
    params = make_project(tmp_path, churn_sample.head(200))
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"account": ["a1", "a2", "a3"], "churn": ["Yes", "No", None]}).to_csv(labels, index=False)
    assert main(["feedback", str(labels), "--key", "account", "--params", str(params)]) == 0
    assert "stored labels for 2 entities by 'account' (3 rows; 1 row(s) without" in capsys.readouterr().out
    assert main(["feedback", str(labels), "--params", str(params)]) == 2  # no key column configured
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "set release.key_column or data.id_columns, or --key" in error
    assert main(["feedback", str(labels), "--key", "customer", "--params", str(params)]) == 2
    assert "labels.csv: no column 'customer'" in capsys.readouterr().err
