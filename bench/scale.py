"""Scale benchmark, measured side by side in one run (printed, never asserted in tests).

  dask speed-up     one study's trials on a LocalCluster of 2 Dask workers vs one worker in this process, one thread
                    per trial (random search keyed by trial number, no pruning: every run scores the identical
                    points); also on a 1-worker LocalCluster                          (goal: >= 1.6 x on 2 cores)
  data size         every stage as its own process (`python -m flows stage NAME`, as DVC runs it) on the
                    shipped 7k rows and on make-large tables: wall time and peak RSS per stage, and the growth
                    exponent log(t2/t1) / log(n2/n1) between sizes                     (goal: <= 1.15)
  optuna on pg      4 worker processes on one PostgreSQL study: trials stored vs expected, worker errors
                                                                                    (goal: 0 lost, 0 errors)

The data-size runs use row caps where a library's cost would otherwise dominate (documented in the README):
tune.max_rows caps the rows each study cross-validates on, train.max_rows the rows each family is fitted on;
validation, split, evaluation and fairness see every row; SHAP explains explain.max_rows test rows.

Usage: python bench/scale.py [--sizes 7043,100000,1000000] [--trials 20] [--skip dask,size,pg]
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402

from tasks.stages import STAGES as STAGE_SPECS  # noqa: E402

STAGES = tuple(spec.name for spec in STAGE_SPECS)  # the one stage list (tasks/stages.py)
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PYTHONWARNINGS": "ignore",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# --- 1. Dask speed-up ----------------------------------------------------------------------------------------------


def bench_dask(trials: int | None, rows: int, repeats: int, record: Recorder) -> None:
    """One study's trials four ways, each repeated ``repeats`` times in rotation (medians, with the spread): in this
    process (one worker, in memory), on 2 local processes (a ProcessPoolExecutor kept warm), and through Prefect on
    a Dask LocalCluster of 1 worker and of 2 workers (each started once, kept warm, as the tune stage does). The last
    three split the trials into the shares the tune stage makes for 2 Dask workers (a batch of trials per task, the
    table shipped once per share) of one study in a throwaway journal file; one thread per trial everywhere.
    `rows` > the shipped 7,043 resamples a bigger table (make-large)."""
    from concurrent.futures import ProcessPoolExecutor

    from flows.cli import QUIET_DEFAULTS
    from optiflow.config import OrchestrationParams, load_config
    from optiflow.data.ingest import coerce, load_dataset, read_source
    from optiflow.data.schema import resolve_schema
    from optiflow.data.split import labels, split_dataset
    from optiflow.data.synth import make_large
    from optiflow.modeling.tuning import JOURNAL, tune_family
    from tasks.fanout import fan_out

    for key, value in {**QUIET_DEFAULTS, **QUIET}.items():
        os.environ.setdefault(key, value)
    config = load_config(REPO / "params.yaml")
    params = config.params
    table = load_dataset(config.source, params.data)[0]
    if rows > len(table):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "large.parquet"
            make_large(read_source(config.source), path, rows, params.seed)
            table = coerce(read_source(path), params.data, path)
    frame = split_dataset(table, params.data, params.split, params.seed).train
    schema, target = resolve_schema(frame, params.data), labels(frame, params.data)
    family = "hist_gradient_boosting"
    trials = trials or params.tune.n_trials
    tune = params.tune.model_copy(update={"sampler": "random", "pruner": "none", "n_trials": trials, "cv_folds": 3})
    fixed = params.train.families[family]

    def run(workers: int, storage: str | None, runner=None, n_trials: int = trials) -> tuple[float, object]:
        settings = tune.model_copy(update={"storage": storage, "n_trials": n_trials})
        extra = {"fan_out": runner} if runner else {}
        started = time.perf_counter()
        result = tune_family(
            family,
            tune.spaces[family],
            frame,
            target,
            schema,
            settings,
            params.seed,
            fixed=fixed,
            progress_bar=False,
            workers=workers,
            **extra,
        )
        return time.perf_counter() - started, result

    shares = OrchestrationParams(task_runner="dask", dask_workers=2).workers  # what the tune stage splits a study into
    print(
        f"\n== Dask: {trials} trials x 3 folds of {family} on {len(frame):,} train rows, in {shares} shares for the "
        f"parallel runs, {repeats} rounds; {_load()}"
    )
    in_process, one_worker, local, two_workers = (
        "1 worker (this process)",
        "1 Dask worker",
        "2 local processes",
        "2 Dask workers",
    )
    times: dict[str, list[float]] = {in_process: [], one_worker: [], local: [], two_workers: []}
    same = []
    spawned = multiprocessing.get_context("spawn")  # like Dask's workers: no forked copy of this process's threads
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(2, mp_context=spawned) as pool:

        def cluster(workers: int):
            return fan_out(OrchestrationParams(task_runner="dask", dask_workers=workers, threads_per_worker=1), 2)

        def on_processes(fn, items):
            return list(pool.map(fn, items))

        started = time.perf_counter()
        with cluster(1) as on_one, cluster(2) as on_two:
            cluster_start = time.perf_counter() - started
            # Warm-up: each worker process imports sklearn/optuna and opens the storage once, as it does once per
            # stage in a real run; timed separately from the steady state.
            warm_up = {
                label: run(shares, f"{JOURNAL}{folder}/warm-{index}.journal", runner, n_trials=2)[0]
                for index, (label, runner) in enumerate(
                    [(one_worker, on_one), (two_workers, on_two), (local, on_processes)]
                )
            }
            for round_ in range(repeats):
                results = {in_process: run(1, None)}
                for label, runner in ((one_worker, on_one), (local, on_processes), (two_workers, on_two)):
                    results[label] = run(
                        shares, f"{JOURNAL}{folder}/{label.replace(' ', '-')}-{round_}.journal", runner
                    )
                for label, (seconds, _) in results.items():
                    times[label].append(seconds)
                scored = [
                    {r["number"]: (r["params"], r["value"]) for r in result.trials} for _, result in results.values()
                ]
                same.append(all(points == scored[0] for points in scored))
                print(
                    f"  round {round_ + 1}: "
                    + ", ".join(f"{label} {seconds:.1f} s" for label, (seconds, _) in results.items())
                    + f"; {_load()}",
                    flush=True,
                )
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, values in times.items():
        spread = (max(values) - min(values)) / medians[label]
        print(
            f"  {label:28} median {medians[label]:7.1f} s   runs {', '.join(f'{v:.1f}' for v in values)}   "
            f"spread {spread:.0%} of the median"
        )
    print(
        f"  before the rounds: {cluster_start:.1f} s to start both clusters, warm-up studies "
        + ", ".join(f"{seconds:.1f} s ({label})" for label, seconds in warm_up.items())
        + f"; identical trials and scores in every round: {all(same)}"
    )
    record.figure(
        "dask",
        {
            "times": times,
            "medians": medians,
            "cluster_start_s": cluster_start,
            "warm_up_s": warm_up,
            "trials": trials,
            "rows": len(frame),
            "identical_trials": all(same),
            "shares": shares,
        },
    )
    record.goal(
        "tuning on 2 Dask workers vs 1 worker, median speed-up",
        medians[in_process] / medians[two_workers],
        1.6,
        True,
        "one worker in this process, same trials",
    )
    record.goal(
        "tuning on 2 Dask workers vs a 1-worker LocalCluster, median speed-up",
        medians[one_worker] / medians[two_workers],
        1.6,
        True,
        "a 1-worker LocalCluster running the same shares",
    )
    record.goal(
        "tuning on 2 Dask workers vs 2 local processes (engine cost)",
        medians[local] / medians[two_workers],
        0.9,
        True,
        "a ProcessPoolExecutor of 2 running the same shares",
    )
    print(f"  after: {_load()}")


# --- 2. Pipeline time and memory by data size ----------------------------------------------------------------------


def _project(work: Path, source: Path, rows: int, trials: int) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    project = work / f"project-{rows}"
    for name in files:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(source=str(source), sha256=None)
    params["tune"].update(n_trials=trials, max_rows=20_000)
    params["train"]["max_rows"] = 200_000
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def _run_stage(project: Path, stage: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one stage process (os.wait4: that child's own high-water mark)."""
    started = time.perf_counter()
    with open(project / f"{stage}.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "flows", "stage", stage], cwd=project, env=env, stdout=log, stderr=log
        )
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed; see {project / f'{stage}.log'}")
    return elapsed, usage.ru_maxrss / 1024


def bench_sizes(sizes: list[int], trials: int, record: Recorder) -> None:
    from optiflow.config import load_config
    from optiflow.data.ingest import read_source
    from optiflow.data.synth import make_large

    print(
        f"\n== Pipeline by data size: each stage its own process; tune {trials} trials per family on at most "
        f"20,000 rows, train on at most 200,000 rows; {_load()}"
    )
    config = load_config(REPO / "params.yaml")
    shipped = read_source(config.source, config.params.data.format)
    results: dict[int, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for rows in sizes:
            if rows == len(shipped):
                source = config.source
            else:
                source = work / f"churn-{rows}.parquet"
                make_large(shipped, source, rows, config.params.seed)
            project = _project(work, source, rows, trials)
            env = {**os.environ, **QUIET, "PYTHONPATH": str(project), "PREFECT_HOME": str(project / ".prefect")}
            env["MPLCONFIGDIR"] = str(project / ".prefect" / "matplotlib")
            results[rows] = {}
            for stage in STAGES:
                results[rows][stage] = _run_stage(project, stage, env)
                seconds, peak = results[rows][stage]
                print(f"  {rows:>9,} rows  {stage:<9} {seconds:8.1f} s  {peak:8.0f} MiB", flush=True)
            shutil.rmtree(project, ignore_errors=True)
    print()
    header = "  stage     " + "".join(f"{f'{n:,} rows':>22}" for n in sizes)
    print(header + "".join(f"{'exp ' + f'{a:,}->{b:,}':>26}" for a, b in itertools.pairwise(sizes)))
    for stage in (*STAGES, "total"):
        cells, times = "", []
        for rows in sizes:
            if stage == "total":
                seconds = sum(t for t, _ in results[rows].values())
                peak = max(m for _, m in results[rows].values())
            else:
                seconds, peak = results[rows][stage]
            times.append((seconds, peak))
            cells += f"{seconds:10.1f} s {peak:7.0f} MiB"
        exps = ""
        for (a, (ta, ma)), (b, (tb, mb)) in itertools.pairwise(zip(sizes, times, strict=True)):
            growth = math.log(b / a)
            exps += f"   time {math.log(tb / ta) / growth:5.2f} mem {math.log(mb / ma) / growth:5.2f}"
        print(f"  {stage:<9} {cells}{exps}")
    print(f"  (growth exponent: 1.0 = linear in rows; goal <= 1.15)  after: {_load()}")
    record.figure(
        "sizes",
        {
            str(rows): {stage: {"seconds": t, "peak_mib": m} for stage, (t, m) in by_stage.items()}
            for rows, by_stage in results.items()
        },
    )
    first, last = sizes[0], sizes[-1]
    total = {rows: sum(t for t, _ in results[rows].values()) for rows in (first, last)}
    record.goal(
        f"pipeline time growth exponent {first:,} -> {last:,} rows",
        math.log(total[last] / total[first]) / math.log(last / first),
        1.15,
        False,
        "linear growth in rows (1.0)",
        unit="",
    )


# --- 3. Optuna on PostgreSQL with 4 concurrent worker processes ----------------------------------------------------

_WORKER = """
import sys, optuna
from optiflow.modeling.tuning import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="bench", storage=open_storage(sys.argv[1]))
def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    for step in range(3):
        trial.report(x * x + step, step)
    return x * x
study.sampler = optuna.samplers.RandomSampler(seed=int(sys.argv[3]))
study.optimize(objective, n_trials=int(sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_postgres(workers: int = 4, trials_each: int = 100) -> None:
    import optuna

    from optiflow.modeling.tuning import open_storage
    from tools import stack

    print(f"\n== Optuna on PostgreSQL: {workers} worker processes x {trials_each} trials on one study; {_load()}")
    with tempfile.TemporaryDirectory() as folder:
        settings = stack.StackSettings.from_env(
            REPO, {"OPTIFLOW_STACK_DIR": folder, "OPTIFLOW_PG_PORT": str(_free_port()), **os.environ}
        )
        try:
            stack.start_postgres(settings)
            stack.create_databases(settings, ("optuna",))
            url = settings.database_url("optuna")
            env = {**os.environ, "PGPASSWORD": settings.password, "PYTHONPATH": str(REPO)}
            os.environ["PGPASSWORD"] = settings.password
            optuna.create_study(study_name="bench", storage=open_storage(url), load_if_exists=True)
            started = time.perf_counter()
            processes = [
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER, url, str(trials_each), str(seed)],
                    env=env,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for seed in range(workers)
            ]
            errors = [(p.wait(), p.stderr.read()) for p in processes]
            elapsed = time.perf_counter() - started
            stored = optuna.load_study(study_name="bench", storage=open_storage(url)).get_trials(deepcopy=False)
        finally:
            stack.down(settings)
            shutil.rmtree(settings.pg_data, ignore_errors=True)
    failed = [code for code, _ in errors if code != 0]
    messages = sum(text.lower().count(word) for _, text in errors for word in ("lock", "error", "exception"))
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    numbers = sorted(t.number for t in stored)
    print(
        f"  trials expected {workers * trials_each}, stored {len(stored)}, complete {complete}; "
        f"trial numbers unique and gap-free: {numbers == list(range(len(stored)))}"
    )
    print(
        f"  worker processes failed: {len(failed)}; lock/error lines in their output: {messages}; "
        f"{elapsed:.1f} s ({len(stored) / elapsed:.0f} trials/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated row counts (7043 = shipped)")
    parser.add_argument(
        "--trials", type=int, help="trials in the Dask speed-up study (default: tune.n_trials, as the tune stage runs)"
    )
    parser.add_argument("--dask-rows", type=int, default=20_000, help="table rows in the Dask speed-up study")
    parser.add_argument("--size-trials", type=int, default=10, help="tune.n_trials per family in the size runs")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the Dask comparison (medians)")
    parser.add_argument("--skip", default="", help="comma-separated: dask, size, pg")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    record = Recorder("scale", keep_previous=bool(skip & {"dask", "size"}))  # a partial run keeps the rest
    print(f"bench/scale.py on {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    try:
        if "pg" not in skip:
            bench_postgres()
        if "dask" not in skip:
            bench_dask(args.trials, args.dask_rows, args.repeats, record)
        if "size" not in skip:
            bench_sizes([int(n) for n in args.sizes.split(",")], args.size_trials, record)
    finally:
        record.save()


if __name__ == "__main__":
    main()
