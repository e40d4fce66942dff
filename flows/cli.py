"""`optiflow` command line. Exit codes: 0 success, 2 bad input or config (the message says what and where)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from flows.servers import mark_ephemeral_servers, start_ephemeral_server, stop_orphaned_servers
from optiflow.config.redaction import install_log_redaction, redact_uri
from optiflow.errors import ConfigError, OptiflowError

log = logging.getLogger("optiflow")

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # loading a verified model downloads its files each time
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "optiflow",  # Optiflow's log lines reach the Prefect UI
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}
# Console log level by -v count: warnings only by default, the stages' progress with -v, everything with -vv.
VERBOSITY = (logging.WARNING, logging.INFO, logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _local_and_quiet(Path(getattr(args, "params", "params.yaml")).resolve().parent, args.verbose)
    install_log_redaction()
    if not os.environ.get("PREFECT_API_URL"):  # a flow here would start an ephemeral Prefect server
        stop_orphaned_servers()
        mark_ephemeral_servers()
    try:
        return args.handler(args)
    except EXPECTED as exc:
        print(f"optiflow: error: {redact_uri(_one_line(exc))}", file=sys.stderr)
        return 2


def _local_and_quiet(root: Path, verbose: int) -> None:
    """Before Prefect or MLflow is imported: state inside the project whatever the entry point (`optiflow`, `python
    -m flows`, make), no telemetry, and logs at the level -v asks for (a value already in the environment wins)."""
    for key, value in {
        **QUIET_DEFAULTS,
        "PREFECT_HOME": str(root / ".prefect"),
        "MPLCONFIGDIR": str(root / ".prefect" / "matplotlib"),
    }.items():
        os.environ.setdefault(key, value)
    level = VERBOSITY[min(verbose, len(VERBOSITY) - 1)]
    for variable in ("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "MLFLOW_LOGGING_LEVEL"):
        if verbose or variable not in os.environ:
            os.environ[variable] = logging.getLevelName(level)
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])  # a no-op where handlers are set already (tests)
    logging.getLogger("optiflow").setLevel(logging.INFO)  # reaches Prefect's API handler; the console filters it
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    for name in _PREFECT_RUN_LOGGERS:
        logging.getLogger(name).addFilter(_no_traceback_for_expected_errors)
        if not verbose:
            logging.getLogger(name).addFilter(_expected_errors_below_the_console)
    if not verbose:  # library warnings are for developers: -v shows them (Prefect routes them to py.warnings)
        warnings.simplefilter("ignore")
        logging.getLogger("py.warnings").setLevel(logging.ERROR)


# Expected failures: bad input or settings (OptiflowError) and the machine refusing (a missing or read-only folder,
# a full disk, a file that cannot be opened): one line and exit 2, no traceback.
EXPECTED = (OptiflowError, OSError)


def _one_line(exc: BaseException) -> str:
    """An OSError as "what: which file" (its str() repeats the errno); anything else as its message."""
    if not isinstance(exc, OSError):
        return str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


_PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def _no_traceback_for_expected_errors(record: logging.LogRecord) -> bool:
    """Prefect logs a failed task or flow with its traceback; for bad input or config (an OptiflowError) the
    message says everything, so keep the line and drop the library stack. Unexpected errors keep theirs."""
    if record.exc_info and isinstance(record.exc_info[1], EXPECTED):
        record.exc_info, record.exc_text = None, None
    return True


def _expected_errors_below_the_console(record: logging.LogRecord) -> bool:
    """Quiet mode: Prefect's lines about a task or flow that failed on bad input or config become INFO, so the
    console shows the one `optiflow: error:` line only; the Prefect UI still gets them, and with -v they stay ERROR."""
    message = record.getMessage()
    if record.levelno >= logging.ERROR and any(f"{name}(" in message or f"{name}:" in message for name in _EXPECTED):
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]


_EXPECTED = tuple(cls.__name__ for cls in _subclasses(OptiflowError))


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptiflowError(f"-S {pair!r}: expected KEY=VALUE, e.g. -S split.test_size=0.25")
        overrides[key] = value
    return overrides


def _prefect_api() -> None:
    """Say which Prefect API a flow run reports to: a configured server (PREFECT_API_URL, e.g. `optiflow stack up`'s)
    is reused, and must answer; without one a temporary local server starts for this run alone (flows/servers.py)."""
    import httpx
    from prefect.settings import get_current_settings

    from optiflow.errors import ServiceUnavailable

    settings = get_current_settings()
    url = settings.api.url
    if not url:
        if settings.server.ephemeral.enabled:  # else Prefect itself says that a server is needed
            url = start_ephemeral_server()
            log.info("Prefect: no server configured (PREFECT_API_URL); a temporary one for this run at %s", url)
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"the Prefect server at {url} (PREFECT_API_URL) does not answer ({type(exc).__name__}); start it "
            "(`optiflow stack up` or `prefect server start`) or unset PREFECT_API_URL for a temporary one"
        ) from None
    log.info("Prefect: reusing the server at %s (PREFECT_API_URL)", url)


def _train(args: argparse.Namespace) -> int:
    """Every setting checked against the data's header first (seconds, no Prefect), then the training flow."""
    from optiflow.preflight import load_settings_for_data

    overrides = _overrides(args.set)
    load_settings_for_data(args.params, overrides)
    from flows.summary import print_training_summary
    from flows.training import training

    _prefect_api()
    results = training(params_path=args.params, overrides=overrides, task_runner=args.task_runner)
    print_training_summary(results)
    return 0


def _stage(args: argparse.Namespace) -> int:
    """Run one stage's bare function (no Prefect run), as DVC does: under the training lock, on inputs the lineage
    record vouches for, stamped when it completes (tasks/lineage.py); ingest first checks the settings against the
    data's header, as a training run does."""
    from flows.training import training_lock
    from optiflow.preflight import load_settings, load_settings_for_data
    from tasks.lineage import check_inputs, write_stamp
    from tasks.stages import STAGES, stage, task_for

    try:
        spec = stage(args.name)
    except KeyError as exc:
        raise OptiflowError(exc.args[0] + _did_you_mean(args.name, [s.name for s in STAGES])) from None
    config = load_settings_for_data(args.params) if spec is STAGES[0] else load_settings(args.params)
    with training_lock(config.root):
        check_inputs(spec, config)
        result = task_for(spec).fn(config)
        write_stamp(spec, config, result)
    log.info("stage %s done: %s", args.name, {k: v for k, v in result.items() if k != "stage"})
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.summary import print_registry_status
    from optiflow.preflight import load_settings

    print_registry_status(load_settings(args.params))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    """Give `champion` back to the version holding `previous`, under the same lock as promotion."""
    import getpass

    from flows.summary import print_rollback
    from optiflow.preflight import load_settings
    from optiflow.release.registry import require_store

    config = load_settings(args.params)
    require_store(config)
    from tasks.release import roll_back_champion

    done = roll_back_champion(config, getpass.getuser(), args.reason)
    print_rollback(done, config.params.registry.model_name, config.params.registry.champion_alias)
    return 0


def _release(args: argparse.Namespace) -> int:
    """start: make a version the challenger; status: the live comparison (no decision taken); decide: run the
    release flow (promote / wait / abort, approval, rollback watch); abort: end the release by hand."""
    import getpass
    import time

    from optiflow.preflight import load_settings
    from optiflow.release.registry import connect, registry_lock, require_store
    from optiflow.release.rollout import start_release

    config = load_settings(args.params)
    registry, release = config.params.registry, config.params.release
    require_store(config)  # before Prefect is imported: nothing registered means nothing to release
    if args.action == "start":
        if args.version is None:
            raise ConfigError("optiflow release start needs --version N")
        connect(config, create=False, writing=True)
        with registry_lock(config.root):
            state = start_release(
                registry.model_name,
                registry.champion_alias,
                release.challenger_alias,
                str(args.version),
                args.mode or (release.mode if release.mode != "direct" else "shadow"),
                args.share if args.share is not None else release.canary_share,
                time.time(),
            )
        print(f"{state.model_name} v{state.challenger}: {state.mode} release against v{state.champion} started")
        return 0
    from flows.summary import print_release_status
    from tasks.release import current_release

    state = current_release(config)
    if args.action == "status":
        print_release_status(config, state)
        return 0
    if args.action == "abort":
        from tasks.release import finish_release

        if state is None:
            raise OptiflowError(f"{registry.model_name}: no release is running ({release.challenger_alias} is unset)")
        finish_release.fn(config, state, "aborted", args.reason, getpass.getuser(), {})
        print(f"{registry.model_name} v{state.challenger}: release aborted ({args.reason})")
        return 0
    from flows.release import release as release_flow

    _prefect_api()
    result = release_flow(params_path=args.params)
    print(f"{result.get('outcome', result['action'])}: {result['reason']}")
    return 0


def _answer_approval(args: argparse.Namespace) -> int:
    """Resume a release flow run paused for approval, as the Prefect UI's form does."""
    import getpass
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        run_id = UUID(args.flow_run)
    except ValueError:
        raise ConfigError(f"{args.flow_run!r} is not a flow run id (a UUID, as the release flow logs it)") from None
    answer = {"approve": args.command == "approve", "reviewer": getpass.getuser(), "comment": args.comment}
    try:
        resume_flow_run(run_id, run_input=answer)
    except ObjectNotFound:
        raise OptiflowError(f"flow run {run_id}: not found on this Prefect API") from None
    except Exception as exc:  # NotPausedError, a pause that timed out
        raise OptiflowError(f"flow run {run_id}: cannot be resumed ({type(exc).__name__}: {exc})") from None
    print(f"flow run {run_id}: {'approved' if answer['approve'] else 'rejected'} by {answer['reviewer']}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    """A champion to compare with, and settings that fit the data (a retraining may follow), before Prefect."""
    from optiflow.preflight import load_settings_for_data
    from optiflow.release.registry import require_store

    require_store(load_settings_for_data(args.params))
    from flows.monitoring import monitoring
    from flows.summary import print_monitoring_summary

    _prefect_api()
    rows = monitoring(params_path=args.params, batches=args.batches, retrain=args.retrain)
    print_monitoring_summary(rows)
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from flows.backtest import backtest

    result = backtest(
        params_path=args.params,
        batches=args.batches,
        batch_rows=args.batch_rows,
        label_delay=args.label_delay,
        shift_at=args.shift_at,
        every_k=args.every_k,
        scenarios=args.scenario,
        policies=args.policy,
    )
    for row in result["table"]:
        print(
            f"{row['scenario']:<18} {row['policy']:<22} mean AUC {row['mean_roc_auc']:.3f} worst "
            f"{row['worst_roc_auc']:.3f} retrains {row['retrains']:>2} train {row['training_seconds']:6.2f} s false "
            f"alarms {row['false_alarms']} delay {row['detection_delay']}"
        )
    print(f"report: {result['folder']}/backtest.html")
    return 0


def _simulate_drift(args: argparse.Namespace) -> int:
    """Write the scenario batches (or the gradual series), each drawn without replacement from the pool."""
    from optiflow.data.simulate import gradual_series, simulate
    from optiflow.io import read_parquet, write_parquet
    from optiflow.preflight import load_settings_for_data

    config = load_settings_for_data(args.params)  # the scenarios name columns
    params = config.params
    pool_path = config.path("pool")
    if not pool_path.is_file():
        raise OptiflowError(f"{pool_path}: no pool yet; run `optiflow train` first")
    pool = read_parquet(pool_path)
    if pool.empty:
        raise OptiflowError(
            f"{pool_path} is empty: split.pool_size is {params.split.pool_size}, so no rows were set aside for "
            "simulated batches; set it (e.g. 0.15) and train again"
        )
    output = Path(args.output) if args.output else config.path("batches")
    if args.gradual:
        batches = [(name, frame) for name, frame, _ in gradual_series(pool, params.data, params.simulate, params.seed)]
    else:
        batches = simulate(pool, params.data, params.simulate, params.seed)
    print(f"drawing each batch without replacement from the {len(pool)} pool rows no model trains on ({pool_path})")
    for name, frame in batches:
        write_parquet(output / f"{name}.parquet", frame)
        print(f"wrote {output / name}.parquet ({len(frame)} rows)")
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    """List the quarantined batches, or release (to the retraining windows) or drop one."""
    from optiflow.monitoring import quarantine
    from optiflow.preflight import load_settings

    config = load_settings(args.params)
    if args.action == "list":
        records = quarantine.quarantined(config)
        for record in records:
            rows = f"{record.rows} rows ({record.labelled_rows} labelled)"
            print(f"{record.batch_id}  {record.at}  {rows}  {record.source}")
            for reason in record.reasons:
                print(f"    {reason}")
        print(f"{len(records)} batch(es) in quarantine ({config.path('quarantine')})")
        return 0
    if not args.batch:
        raise OptiflowError(f"quarantine {args.action} needs the batch id (see `optiflow quarantine list`)")
    done = (quarantine.release if args.action == "release" else quarantine.drop)(config, args.batch, args.reason)
    where = "kept for the retraining windows" if args.action == "release" and done.labelled_rows else "removed"
    verb = {"release": "released", "drop": "dropped"}[args.action]
    print(f"{done.batch_id}: {verb} from quarantine ({where}; reason: {args.reason})")
    return 0


def _labels(args: argparse.Namespace) -> int:
    """Late labels of a monitored batch: its realised metrics beside the estimate it got without them."""
    from optiflow.monitoring.labels import attach_labels
    from optiflow.preflight import load_settings

    summary = attach_labels(load_settings(args.params), args.batch, Path(args.labels))
    performance = summary["performance"]
    estimated, realised = performance["estimated"]["roc_auc"], performance["realised"]["roc_auc"]
    print(
        f"{args.batch}: {summary['quality_rows']} labelled rows the champion never saw; ROC AUC realised "
        f"{realised:.4f}, estimated {estimated['estimate']:.4f} [{estimated['low']:.4f}, {estimated['high']:.4f}]; "
        f"shift: {summary['diagnosis']['shift']}"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    """The deployments run training on params.yaml's data: its settings are checked before anything is served."""
    from optiflow.preflight import load_settings_for_data

    load_settings_for_data(args.params)
    from flows.deployments import serve_deployments

    if not os.environ.get("PREFECT_API_URL"):
        raise OptiflowError(
            "serve needs a Prefect server: start one with `prefect server start`, then set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (`make serve` does)"
        )
    serve_deployments(args.params, schedules=not args.no_schedules)
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Batch-score a file and print its counts. The settings, a champion and a readable input header are checked
    first; a small job then scores in this process with no Prefect run and no server, while chunks on Dask workers
    (`--task-runner dask`) go through the scoring flow. A run that scored nothing exits 2."""
    from flows.summary import nothing_scored, print_scoring_summary
    from optiflow.config import load_config
    from optiflow.data.ingest import check_header, read_header
    from optiflow.release.registry import require_store

    flags = {
        "score.chunk_rows": args.chunk_rows,
        "score.workers": args.workers,
        "score.reasons": args.reasons,
        "score.cache": args.cache,
        "orchestration.task_runner": args.task_runner,
    }
    overrides = {**_overrides(args.set), **{key: value for key, value in flags.items() if value is not None}}
    # Training settings (train.families) are not checked here: scoring trains nothing, and checking them would
    # import every estimator family; the settings schema is checked in full.
    config = load_config(args.params, overrides)
    require_store(config)
    source = Path(args.input)
    if not source.is_file():
        raise OptiflowError(f"{source}: input file not found")
    check_header(read_header(source), source)
    if config.params.orchestration.task_runner == "dask":
        from flows.scoring import scoring

        _prefect_api()
        (summary,) = scoring(args.input, args.output, args.params, args.alias, args.version, overrides, args.force)
    else:
        from optiflow.serving.batch import score_batch

        done = score_batch(config, source, Path(args.output), alias=args.alias, version=args.version, force=args.force)
        summary = done.to_dict()
    print_scoring_summary(summary)
    problem = nothing_scored(summary)
    if problem:
        raise OptiflowError(problem)
    return 0


def _serve_api(args: argparse.Namespace) -> int:
    """Serve the champion over HTTP with micro-batching (blocks until stopped). Like predict it starts no Prefect and
    checks the settings schema, not the training families."""
    from optiflow.config import load_config
    from optiflow.release.registry import require_store
    from optiflow.serving.api import run_server

    overrides = {**_overrides(args.set), **({"serve.port": args.port} if args.port else {})}
    config = load_config(args.params, overrides)
    require_store(config)
    run_server(config, alias=args.alias)
    return 0


def _feedback(args: argparse.Namespace) -> int:
    """Store the outcomes of a labels file in the prediction log, where they join the logged scores by entity key."""
    from optiflow.preflight import load_settings
    from optiflow.serving.feedback import store_feedback

    done = store_feedback(load_settings(args.params), Path(args.labels), key=args.key)
    skipped = f"; {done.unlabelled} row(s) without a key or label skipped" if done.unlabelled else ""
    print(f"{done.source}: stored labels for {done.stored} entities by {done.key_column!r} ({done.rows} rows{skipped})")
    return 0


def _init(args: argparse.Namespace) -> int:
    """Profile a table and write the data-specific part of params.yaml (refusing to overwrite a hand-edited file)."""
    from flows.summary import print_init_summary
    from optiflow.config import parse_params
    from optiflow.config.writing import hand_edited, new_file_groups, refuse_overwrite, render
    from optiflow.data.ingest import read_source
    from optiflow.data.profile import propose
    from optiflow.io import write_text
    from optiflow.preflight import column_problems

    source, params = Path(args.data).resolve(), Path(args.params).resolve()
    frame = read_source(source)
    setting = os.path.relpath(source, params.parent)
    sensitive = tuple(column.strip() for column in (args.sensitive or "").split(",") if column.strip())
    proposal = propose(frame, source, setting, args.target, args.positive, sensitive, args.batch_rows)
    current = params.read_text(encoding="utf-8") if params.is_file() else None
    rendered = render(current, proposal.settings, new_file_groups(), proposal.comments, setting)
    import yaml

    problems = column_problems(parse_params(yaml.safe_load(rendered), str(params)), list(frame.columns))
    if problems:  # what init writes must pass its own check; anything else is a bug here
        raise OptiflowError("optiflow init proposed settings that do not fit the data:\n" + "\n".join(problems))
    if current is not None and current != rendered and hand_edited(current) and not args.force:
        raise refuse_overwrite(str(args.params), current, rendered)
    write_text(params, rendered)
    print_init_summary(proposal, str(args.params))
    return 0


def _export_model(args: argparse.Namespace) -> int:
    """A verified local copy of a registered version, for `mlflow models serve -m DIR --env-manager local`."""
    from optiflow.preflight import load_settings
    from optiflow.release.registry import connect, export_verified

    config = load_settings(args.params)
    connect(config)
    alias = None if args.version else (args.alias or config.params.registry.champion_alias)
    version = export_verified(config.params.registry.model_name, Path(args.output), alias=alias, version=args.version)
    log.info("exported %s v%s to %s, every file verified", config.params.registry.model_name, version, args.output)
    return 0


def _make_large(args: argparse.Namespace) -> int:
    """Resample params.yaml's data.source into a bigger Parquet table (optiflow/synth.py)."""
    from optiflow.data.ingest import read_source
    from optiflow.data.synth import make_large
    from optiflow.preflight import load_settings

    config = load_settings(args.params)
    source = read_source(config.source, config.params.data.format)
    seed = config.params.seed if args.seed is None else args.seed
    done = make_large(source, Path(args.output), args.rows, seed, chunk_rows=args.chunk_rows)
    log.info("make-large: %s rows -> %s (seed %d)", f"{done['rows']:,}", done["output"], seed)
    return 0


def _stack(args: argparse.Namespace) -> int:
    """PostgreSQL + MLflow server + Prefect server on 127.0.0.1 (optiflow/stack.py)."""
    from flows.summary import console, table
    from tools import stack

    settings = stack.StackSettings.from_env(Path(args.params).resolve().parent)
    if args.action == "up":
        stack.up(settings, timeout=args.timeout)
    elif args.action == "down":
        stack.down(settings)
    out = console()
    services = table("Optiflow stack", out)
    for column in ("service", "state", "address"):
        services.add_column(column)
    for row in stack.status(settings):
        services.add_row(row["service"], row["state"], row["address"])
    out.print(services)
    if args.action == "up":
        out.print(f"Use it in this shell: [bold]source {settings.env_file}[/bold]")
    return 0


def _dvc_yaml(args: argparse.Namespace) -> int:
    from optiflow.config import load_config
    from tasks.stages import render_dvc_yaml

    rendered = render_dvc_yaml(load_config(args.params))
    return _write_or_check(Path(args.output), rendered, args.check, "tasks/stages.py and the paths", "dvc-yaml")


def _write_or_check(target: Path, rendered: str, check: bool, source: str, command: str) -> int:
    from optiflow.io import write_text

    if check:
        if not target.is_file() or target.read_text(encoding="utf-8") != rendered:
            raise OptiflowError(f"{target} is out of date with {source}; run `optiflow {command}`")
        return 0
    write_text(target, rendered)
    log.info("wrote %s", target)
    return 0


def _write_stdout(text: str) -> None:
    """Write to stdout; a reader that stops early (`| head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit


_ORIGIN_STYLES = {"default": "dim", "runtime.yaml": "cyan", "-S": "magenta"}


def _config_show(args: argparse.Namespace) -> int:
    """The effective settings, each with where it came from (default, params.yaml, runtime.yaml, env NAME, -S)."""
    from optiflow.config import resolve_settings
    from optiflow.config.reference import aligned, format_settings, settings_lines

    resolved = resolve_settings(args.params, _overrides(args.set))
    if not sys.stdout.isatty():
        _write_stdout(format_settings(resolved) + "\n")
        return 0
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for text, origin in aligned(settings_lines(resolved)):
        if origin is None:
            console.print(Text(text, style="dim" if text.startswith("#") else "bold"))
            continue
        style = "yellow" if origin.startswith("env ") else _ORIGIN_STYLES.get(origin, "green")
        console.print(Text(text) + Text(f"  # {origin}", style=style))
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    from optiflow.config.reference import render_json_schema

    rendered = render_json_schema()
    if args.output is None:
        _write_stdout(rendered)
        return 0
    return _write_or_check(Path(args.output), rendered, False, "the settings schema", "config schema")


def _docs(args: argparse.Namespace) -> int:
    """Regenerate what the docs take from the code (or --check it): the stage diagram in README.md and
    docs/configuration.md from the settings schema."""
    from optiflow.config.reference import DOCS_PATH, render_docs
    from tasks.stages import with_stage_diagram

    readme = Path(args.readme)
    diagram = with_stage_diagram(readme.read_text(encoding="utf-8"), str(readme))
    generated = {readme: diagram, Path(DOCS_PATH): render_docs()}
    for target, rendered in generated.items():
        _write_or_check(target, rendered, args.check, "tasks/stages.py and the settings schema", "docs")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a misspelt command or choice."""

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            message += _did_you_mean(match.group(1), re.findall(r"'([^']*)'", match.group(2)))
        super().error(message)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    from optiflow.errors import closest

    match = closest(name, known)
    return f"; did you mean {match!r}?" if match else ""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optiflow", description="End-to-end MLOps workflow for tabular classification.")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines: -v the stages' progress, -vv everything"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        sub.add_argument(  # also after the command: `optiflow train -v`
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log lines (-vv: everything)"
        )
        sub.set_defaults(handler=handler)
        return sub

    init = command("init", _init, "profile a table and write the data-specific settings into params.yaml")
    init.add_argument("data", help="the table: CSV (optionally compressed) or Parquet")
    init.add_argument("--target", required=True, help="the label column to predict")
    init.add_argument("--positive", help="the target value of the positive class (default: 1, True, yes, ...)")
    init.add_argument("--sensitive", help="comma-separated columns to judge fairness on (never guessed)")
    init.add_argument("--batch-rows", type=int, default=1000, help="rows per monitored batch you expect (drift tests)")
    init.add_argument("--force", action="store_true", help="overwrite a params file edited by hand")

    train = command("train", _train, "run the training flow (Prefect) and print a summary")
    train.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key for this run"
    )
    train.add_argument(
        "--task-runner", choices=["threads", "dask"], help="where parallel pieces run (orchestration.task_runner)"
    )
    stage = command("stage", _stage, "run one stage function without Prefect (used by dvc.yaml)")
    stage.add_argument("name")
    command("status", _status, "list registered model versions, aliases and key metrics")
    rollback = command("rollback", _rollback, "move `champion` back to the version holding `previous`")
    rollback.add_argument("--reason", default="not given", help="why (recorded as a tag on both versions)")
    released = command("release", _release, "start, review, decide or abort the release of a challenger")
    released.add_argument("action", choices=["start", "status", "decide", "abort"])
    released.add_argument("--version", help="the version to release (start)")
    released.add_argument(
        "--mode",
        choices=["shadow", "canary", "direct"],
        help="default: release.mode, or shadow when it is direct (start)",
    )
    released.add_argument("--share", type=float, help="canary share of entities (default: release.canary_share)")
    released.add_argument("--reason", default="not given", help="why (abort; recorded on the version)")
    for verb in ("approve", "reject"):
        answer = command(verb, _answer_approval, f"{verb} a release waiting for approval (resumes its flow run)")
        answer.add_argument("flow_run", help="the paused release flow run's id (logged, and shown in the UI)")
        answer.add_argument("--comment", default="", help="why (recorded on the version)")
    monitor = command("monitor", _monitor, "check new batches for drift and retrain when the decision says so")
    monitor.add_argument("--batches", default=None, help="a batch file or folder (default: paths.batches)")
    monitor.add_argument(
        "--retrain",
        choices=["auto", "event", "direct"],
        default="auto",
        help="auto: by event when a server serves the training deployment, else run training directly",
    )
    backtest = command("backtest", _backtest, "compare retraining policies on a replayed stream with shifts")
    backtest.add_argument("--batches", type=int, help="batches in the stream, one a day (backtest.batches)")
    backtest.add_argument("--batch-rows", type=int, help="rows per batch (backtest.batch_rows)")
    backtest.add_argument("--label-delay", type=int, help="batches until labels arrive (backtest.label_delay)")
    backtest.add_argument("--shift-at", type=int, help="first changed batch of each scenario (backtest.shift_at)")
    backtest.add_argument("--every-k", type=int, help="k of the every-k policy (backtest.every_k)")
    backtest.add_argument("--scenario", action="append", help="a scenario (repeat; default: backtest.scenarios)")
    backtest.add_argument("--policy", action="append", help="a policy (repeat; default: backtest.policies)")
    simulate = command("simulate-drift", _simulate_drift, "write drifted labelled batches from the pool")
    simulate.add_argument("--output", default=None, help="folder (default: paths.batches)")
    simulate.add_argument("--gradual", action="store_true", help="write the gradual price-increase series instead")
    quarantined = command("quarantine", _quarantine, "list, release or drop batches held in quarantine")
    quarantined.add_argument("action", choices=["list", "release", "drop"])
    quarantined.add_argument("batch", nargs="?", help="the batch id (release and drop)")
    quarantined.add_argument("--reason", default="not given", help="why (recorded in the monitoring history)")
    late = command("labels", _labels, "attach late labels to a monitored batch: realised metrics beside the estimate")
    late.add_argument("batch", help="the batch id (its folder under paths.monitoring)")
    late.add_argument("labels", help="CSV or Parquet with the batch's rows (or their id columns) and the target")
    serve = command("serve", _serve, "serve the training and monitoring deployments (needs a Prefect server)")
    serve.add_argument("--no-schedules", action="store_true", help="no cron schedules (runs only on demand/events)")
    predict = command("predict", _predict, "batch-score a CSV or Parquet file with the champion (or --alias/--version)")
    predict.add_argument("--input", required=True, help="CSV (optionally compressed) or Parquet file to score")
    predict.add_argument("--output", required=True, help=".parquet/.pq for Parquet, anything else for CSV")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--alias", help="registered model alias (default: register.champion_alias)")
    which.add_argument("--version", help="registered model version")
    predict.add_argument("--chunk-rows", type=int, help="rows per chunk (score.chunk_rows)")
    predict.add_argument("--workers", type=int, help="chunks scored concurrently (score.workers)")
    predict.add_argument("--reasons", type=int, help="top reason codes per row, 0 for none (score.reasons)")
    predict.add_argument(
        "--cache", action=argparse.BooleanOptionalAction, default=None, help="use the prediction cache (score.cache)"
    )
    predict.add_argument(
        "--task-runner", choices=["threads", "dask"], help="threads, or chunks on Dask (orchestration.task_runner)"
    )
    predict.add_argument(
        "--force", action="store_true", help="let the output replace the input or a file the project keeps"
    )
    predict.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key for this run"
    )
    serve = command("serve-api", _serve_api, "serve the champion over HTTP with dynamic micro-batching")
    serve.add_argument("--alias", help="alias to serve and follow (default: register.champion_alias)")
    serve.add_argument("--port", type=int, help="port (serve.port)")
    serve.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key for this run"
    )
    feedback = command("feedback", _feedback, "store outcomes (key and target columns) to join the prediction log")
    feedback.add_argument("labels", help="CSV (optionally compressed) or Parquet with the key and data.target columns")
    feedback.add_argument("--key", help="the entity key column (default: release.key_column, else data.id_columns[0])")
    export = command("export-model", _export_model, "copy a registered version, verified, for `mlflow models serve`")
    export.add_argument("--output", required=True, help="a new folder to write the model into")
    chosen = export.add_mutually_exclusive_group()
    chosen.add_argument("--alias", help="registered model alias (default: register.champion_alias)")
    chosen.add_argument("--version", help="registered model version")
    large = command("make-large", _make_large, "write a bigger table resampled with noise from data.source")
    large.add_argument("--rows", type=int, default=1_000_000, help="rows to write (default 1,000,000)")
    large.add_argument("--output", default="data/large/churn-1m.parquet", help="Parquet file to write")
    large.add_argument("--seed", type=int, default=None, help="default: params.yaml seed")
    large.add_argument("--chunk-rows", type=int, default=100_000, help="rows generated and written at a time")
    stack = command("stack", _stack, "start, stop or show PostgreSQL + MLflow server + Prefect server on 127.0.0.1")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service (up)")
    dvc = command("dvc-yaml", _dvc_yaml, "render dvc.yaml from the stage list and the effective paths")
    dvc.add_argument("--output", default="dvc.yaml")
    dvc.add_argument("--check", action="store_true", help="fail if dvc.yaml differs from what would be rendered")
    docs_help = "regenerate the stage diagram in README.md and docs/configuration.md from the code"
    docs = commands.add_parser("docs", help=docs_help, description=docs_help)
    docs.add_argument("--readme", default="README.md", help="file holding the diagram (default: README.md)")
    docs.add_argument("--check", action="store_true", help="fail if either differs from what would be generated")
    docs.set_defaults(handler=_docs)
    _config_parser(commands)
    return parser


def _config_parser(commands: argparse._SubParsersAction) -> None:
    """`optiflow config show|schema`."""
    config = commands.add_parser("config", help="show the effective settings or write their JSON Schema")
    actions = config.add_subparsers(dest="action", required=True)
    show = actions.add_parser(
        "show",
        help="print every effective setting and where it came from",
        description="Print every effective setting and where it came from: default, params.yaml, runtime.yaml, "
        "env OPTIFLOW_<GROUP>__<KEY> or -S.",
    )
    show.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    show.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key, as a run would"
    )
    show.set_defaults(handler=_config_show)
    schema = actions.add_parser("schema", help="write the JSON Schema of the settings (stdout by default)")
    schema.add_argument("--output", default=None, help="file to write (default: stdout)")
    schema.set_defaults(handler=_config_schema)
