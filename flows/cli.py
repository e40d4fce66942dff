"""`optiflow` command line. Exit codes: 0 success, 2 bad input or config (the message says what and where)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from optiflow.errors import OptiflowError

log = logging.getLogger("optiflow")

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    for name in _PREFECT_RUN_LOGGERS:
        logging.getLogger(name).addFilter(_no_traceback_for_expected_errors)
    try:
        return args.handler(args)
    except OptiflowError as exc:
        print(f"optiflow: error: {exc}", file=sys.stderr)
        return 2


_PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def _no_traceback_for_expected_errors(record: logging.LogRecord) -> bool:
    """Prefect logs a failed task or flow with its traceback; for bad input or config (an OptiflowError) the
    message says everything, so keep the line and drop the library stack. Unexpected errors keep theirs."""
    if record.exc_info and isinstance(record.exc_info[1], OptiflowError):
        record.exc_info, record.exc_text = None, None
    return True


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptiflowError(f"-S {pair!r}: expected KEY=VALUE, e.g. -S split.test_size=0.25")
        overrides[key] = value
    return overrides


def _train(args: argparse.Namespace) -> int:
    from flows.summary import print_training_summary
    from flows.training import training

    results = training(params_path=args.params, overrides=_overrides(args.set))
    print_training_summary(results)
    return 0


def _stage(args: argparse.Namespace) -> int:
    """Run one stage's bare function (no Prefect run), as DVC does."""
    from flows.training import STAGE_TASKS
    from optiflow.config import load_config

    tasks = {task.name: task for task in STAGE_TASKS}
    if args.name not in tasks:
        raise OptiflowError(f"unknown stage {args.name!r}; stages: {list(tasks)}")
    result = tasks[args.name].fn(load_config(args.params))
    log.info("stage %s done: %s", args.name, {k: v for k, v in result.items() if k != "stage"})
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.summary import print_registry_status
    from optiflow.config import load_config

    print_registry_status(load_config(args.params))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    """Give `champion` back to the version holding `previous`, under the same lock as promotion."""
    import getpass
    from datetime import UTC, datetime

    from flows.summary import print_rollback
    from optiflow.config import load_config
    from optiflow.registry import connect, registry_lock, rollback

    config = load_config(args.params)
    registry = config.params.registry
    connect(config)
    with registry_lock(config.root):
        done = rollback(
            registry.model_name,
            registry.champion_alias,
            registry.previous_alias,
            user=getpass.getuser(),
            reason=args.reason,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    print_rollback(done, registry.model_name, registry.champion_alias)
    return 0


def _dvc_yaml(args: argparse.Namespace) -> int:
    from optiflow.io import write_text
    from optiflow.stages import render_dvc_yaml

    target = Path(args.output)
    rendered = render_dvc_yaml()
    if args.check:
        if not target.is_file() or target.read_text() != rendered:
            raise OptiflowError(f"{target} is out of date with optiflow/stages.py; run `optiflow dvc-yaml`")
        return 0
    write_text(target, rendered)
    log.info("wrote %s", target)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optiflow", description="End-to-end MLOps workflow for tabular classification."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        sub.set_defaults(handler=handler)
        return sub

    train = command("train", _train, "run the training flow (Prefect) and print a summary")
    train.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key for this run"
    )
    stage = command("stage", _stage, "run one stage function without Prefect (used by dvc.yaml)")
    stage.add_argument("name")
    command("status", _status, "list registered model versions, aliases and key metrics")
    rollback = command("rollback", _rollback, "move `champion` back to the version holding `previous`")
    rollback.add_argument("--reason", default="not given", help="why (recorded as a tag on both versions)")
    dvc = command("dvc-yaml", _dvc_yaml, "render dvc.yaml from the stage list")
    dvc.add_argument("--output", default="dvc.yaml")
    dvc.add_argument("--check", action="store_true", help="fail if dvc.yaml differs from the stage list")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
