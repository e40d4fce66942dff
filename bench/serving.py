"""Serving benchmark: one registered model (gradient boosting on the shipped data, exported to ONNX and checked for
parity at registration, as the register stage does), measured side by side in one run.

  onnx        parity figures, single-row latency of the ONNX graph vs the Python model, in this process
                                                                        (goal: >= 3 x lower with the ONNX graph)
  small jobs  fresh processes: `optiflow predict` on 50 rows and `optiflow serve-api` until /health answers, vs a bare
              script loading the same model with mlflow.pyfunc.load_model and predicting   (goals: <= 2 x the script)
  batch       rows/s of a per-row predict loop, one in-memory predict_proba call, and chunked scoring (read + validate
              + score + write, overlapped)                  (goals: chunked >= 100 x per-row, >= 1 x the single call)
  sizes       time and peak RSS scoring 10k .. 10M rows from CSV, each in its own process   (goal: 10M <= 1.5 x 1M)
  cache       a fully cached re-run vs the run that filled the cache
  online      requests/s and p50/p95/p99 latency at concurrency 1, 4, 16, 64: `optiflow serve-api` vs
              `mlflow models serve` (one row per request, 127.0.0.1)   (goal at 64: >= 3 x req/s, p95 no worse)
  steady      serve-api at concurrency 16 for 60 s, with a latency histogram
                                                            (goals: p99 <= 5 x p50, no request over 250 ms)
  shadow      serve-api at concurrency 64 with a shadow release (a second version scores every row off the
              response path) vs without, alternated on one server                (goals: req/s >= 0.8 x without,
                                                                                          p99 <= 1.25 x without)

Input files are the shipped rows resampled with replacement into a temp dir, with monthly_charges jittered so rows
are distinct (otherwise the cache would hit inside the first run). Load is bounded in requests and seconds. Figures
and goals go to bench/results/serving.json (bench/report.py renders docs/benchmarks.md).

Usage: python bench/serving.py [--rows 1000000] [--sizes 10000,100000,1000000,10000000] [--seconds 30]
       [--steady-seconds 60] [--repeats 3] [--shadow-rounds 2] [--skip sizes,online,...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402

NAME = "optiflow-churn"
BLOCK = 500_000  # rows generated per write


def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(work / "prefect-home"),
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
    }


def _project(work: Path) -> Path:
    """params.yaml and the shipped data in ``work``, one gradient-boosting model registered as champion, exported to
    ONNX and checked on the validation split as the register stage does."""
    import yaml
    from mlflow import MlflowClient

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (work / params["data"]["source"]).parent.mkdir(parents=True)
    shutil.copy2(REPO / params["data"]["source"], work / params["data"]["source"])
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    version = _register(work / "params.yaml", work / "candidate", seed_offset=0)
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return work / "params.yaml"


def _register(params_path: Path, folder: Path, seed_offset: int) -> str:
    """Fit gradient boosting (seed + ``seed_offset``) on the train split and register it as the register stage does
    (ONNX export checked on the validation split); the new version."""
    from optiflow.config import load_config
    from optiflow.data.ingest import load_dataset
    from optiflow.data.schema import resolve_schema
    from optiflow.data.split import labels, split_dataset
    from optiflow.modeling.candidates import save_candidate
    from optiflow.modeling.families import build_pipeline
    from optiflow.release.registry import connect, log_model_version
    from optiflow.release.serving_spec import ServingSpec

    config = load_config(params_path)
    frame, _ = load_dataset(config.source, config.params.data)
    splits = split_dataset(frame, config.params.data, config.params.split, config.params.seed)
    schema = resolve_schema(frame, config.params.data)
    family = "hist_gradient_boosting"
    model = build_pipeline(family, config.params.train.families[family], schema, config.params.seed + seed_offset)
    model.fit(splits.train[list(schema.features)], labels(splits.train, config.params.data))
    save_candidate(folder, model, {"family": family, "features": list(schema.features)})
    connect(config)
    spec = ServingSpec.from_frame(splits.train, schema.features, 0.35, config.params.data, config.params.validation)
    return log_model_version(
        folder,
        model,
        model_name=NAME,
        input_example=frame[list(schema.features)].head(5),
        spec=spec,
        parity_rows=splits.valid,
    )


def _make_file(source: Path, target: Path, rows: int, seed: int) -> Path:
    """``rows`` shipped rows drawn with replacement (target dropped), monthly_charges jittered to keep rows distinct."""
    shipped = pd.read_csv(source).drop(columns=["churn"])
    rng = np.random.default_rng(seed)
    for start in range(0, rows, BLOCK):
        block = shipped.iloc[rng.integers(0, len(shipped), min(BLOCK, rows - start))].reset_index(drop=True)
        block["monthly_charges"] = (block["monthly_charges"] + rng.uniform(0, 0.5, len(block))).round(4)
        block.to_csv(target, mode="a" if start else "w", header=start == 0, index=False)
    return target


def _scorer(params_path: Path, reasons: int, runtime: str = "auto"):
    from optiflow.config import load_config
    from optiflow.serving.batch import load_model, make_scorer

    config = load_config(params_path)
    loaded, _ = load_model(config, runtime=runtime)
    return config, make_scorer(loaded, config, reasons)


def _p50_ms(call, rows: list, repeats: int = 1) -> float:
    call(rows[0])
    times = []
    for row in rows:
        for _ in range(repeats):
            started = time.perf_counter()
            call(row)
            times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def _onnx(params_path: Path, source: Path) -> dict:
    """The champion as ONNX graph and as Python model, in this process: parity and single-row latency."""
    from mlflow import MlflowClient

    _, python = _scorer(params_path, 0, runtime="python")
    _, onnx = _scorer(params_path, 0, runtime="onnx")
    from threadpoolctl import threadpool_limits

    typed, _ = python.check_rows(pd.read_csv(source, nrows=300))
    singles = [typed.iloc[[i]] for i in range(len(typed))]
    tags = MlflowClient().get_model_version(NAME, python.model_version).tags
    with threadpool_limits(limits=1):  # both on one native thread, as serve-api scores (ONNX Runtime sessions too)
        return {
            "parity": tags.get("optiflow.onnx.check"),
            "python_ms": _p50_ms(python.model.predict_proba, singles),
            "onnx_ms": _p50_ms(onnx.model.predict_proba, singles),
            "python_batch_ms": _p50_ms(python.model.predict_proba, [typed] * 5),
            "onnx_batch_ms": _p50_ms(onnx.model.predict_proba, [typed] * 5),
        }


_BARE = """
import sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
schema = model.metadata.get_input_schema()
frame = pd.read_csv(sys.argv[2]).astype({column.name: column.type.to_pandas() for column in schema.inputs})
model.predict(frame)
"""


def _timed_process(command: list[str], work: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=_env(work), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _ready_seconds(command: list[str], health: str, work: Path) -> float:
    started = time.perf_counter()
    server = _start(command, health, work, poll=0.05)
    ready = time.perf_counter() - started
    _stop(server)
    return ready


def _small_jobs(params_path: Path, work: Path, repeats: int) -> dict:
    """Fresh processes, alternated so the neighbours' load hits each alike; medians of ``repeats``."""
    small = _make_file(REPO / "data" / "raw" / "wa_churn.csv.gz", work / "small50.csv", 50, seed=5)
    port = _free_port()
    commands = {
        "bare script (mlflow.pyfunc.load_model + predict)": [
            sys.executable,
            "-c",
            _BARE,
            f"models:/{NAME}@champion",
            str(small),
        ],
        "optiflow predict, 50 rows": [
            sys.executable,
            "-m",
            "flows",
            "predict",
            "--params",
            str(params_path),
            "--input",
            str(small),
            "--output",
            str(work / "small50.out.csv"),
        ],
    }
    serve = [sys.executable, "-m", "flows", "serve-api", "--params", str(params_path), "--port", str(port)]
    times: dict[str, list[float]] = {label: [] for label in [*commands, "optiflow serve-api, until /health answers"]}
    for _ in range(repeats):
        for label, command in commands.items():
            times[label].append(_timed_process(command, work))
        times["optiflow serve-api, until /health answers"].append(
            _ready_seconds(serve, f"http://127.0.0.1:{port}/health", work)
        )
    return {label: {"median": statistics.median(values), "runs": values} for label, values in times.items()}


def _batch(params_path: Path, source: Path, work: Path) -> dict[str, float]:
    from optiflow.serving.batch import score_file

    config, scorer = _scorer(params_path, reasons=0)
    raw = pd.read_csv(source)
    typed, _ = scorer.check_rows(raw)
    model = scorer.model
    loop_rows = 500
    started = time.perf_counter()
    for i in range(loop_rows):
        model.predict_proba(typed.iloc[[i]])
    per_row = loop_rows / (time.perf_counter() - started)
    started = time.perf_counter()
    model.predict_proba(typed)
    single = len(typed) / (time.perf_counter() - started)
    del typed
    started = time.perf_counter()
    frame = pd.read_csv(source)
    good, _ = scorer.check_rows(frame)
    pd.DataFrame({"probability": model.predict_proba(good)[:, 1]}).to_parquet(work / "single.parquet")
    single_e2e = len(frame) / (time.perf_counter() - started)
    del frame, good
    summary = score_file(source, work / "chunked.parquet", scorer, config.params.score)
    chunked = summary.rows_scored / summary.seconds
    one_worker = score_file(
        source, work / "chunked1.parquet", scorer, config.params.score.model_copy(update={"workers": 1})
    )
    return {
        "rows": len(raw),
        "runtime": "onnx" if type(model).__name__ == "OnnxModel" else "python",
        "per_row": per_row,
        "single": single,
        "single_e2e": single_e2e,
        "chunked": chunked,
        "chunked_1_worker": one_worker.rows_scored / one_worker.seconds,
        "reasons": config.params.score.reasons,
        "chunk_rows": config.params.score.chunk_rows,
        "workers": config.params.score.workers,
    }


def _rss_child(params_path: Path, source: Path, output: Path) -> None:
    """Run in its own process: score ``source`` and print rows, seconds and this process's peak RSS."""
    from optiflow.serving.batch import score_file

    config, scorer = _scorer(params_path, reasons=0)
    summary = score_file(source, output, scorer, config.params.score)
    print(json.dumps({"rows": summary.rows_scored, "seconds": summary.seconds, "peak_mb": _peak_mb()}))


def _peak_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork and exec, so a child of a
    big parent would report the parent's size."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def _rss(params_path: Path, source: Path, work: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(params_path), str(source), str(work / "rss.parquet")],
        env=_env(work),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    (work / "rss.parquet").unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache(params_path: Path, source: Path, work: Path, reasons: int) -> tuple[float, float, int, int]:
    from optiflow.serving.batch import score_file
    from optiflow.serving.cache import PredictionCache

    config, scorer = _scorer(params_path, reasons=reasons)
    cache = PredictionCache(work / f"cache-{reasons}.sqlite")
    cold = score_file(source, work / "cold.parquet", scorer, config.params.score, cache)
    warm = score_file(source, work / "warm.parquet", scorer, config.params.score, cache)
    return cold.seconds, warm.seconds, warm.cache_hits, cold.rows_scored


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], health: str, work: Path, poll: float = 0.5) -> subprocess.Popen:
    import httpx

    server = subprocess.Popen(
        command, cwd=work, env=_env(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{' '.join(command)} exited with {server.returncode}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(poll)
    _stop(server)
    raise SystemExit(f"{' '.join(command)} did not become healthy in 180 s")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


async def _load(url: str, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    """``concurrency`` clients, one keep-alive connection each, send until ``requests`` were sent or ``seconds``
    passed. aiohttp, not httpx: httpx's pool itself tops out near 100 req/s at 64 connections here."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = 0.0  # set after the warm-up
    headers = {"content-type": "application/json"}

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal sent, errors
        while sent < requests and time.perf_counter() < stop_at:
            body = bodies[sent % len(bodies)]
            sent += 1
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as answer:
                await answer.read()
                errors += answer.status != 200
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for _ in range(20):  # warm-up
            async with http.post(url, data=bodies[0], headers=headers) as warm_up:
                await warm_up.read()
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "p99": cuts[98] * 1000,
        "max": max(latencies) * 1000,
        "n": len(latencies),
        "errors": errors,
        "latencies_ms": [round(value * 1000, 2) for value in latencies],
    }


def _targets(params_path: Path, source: Path, with_mlflow: bool) -> dict:
    _, scorer = _scorer(params_path, reasons=0)
    typed, _ = scorer.check_rows(pd.read_csv(source, nrows=2000))
    records = json.loads(typed.to_json(orient="records"))
    ours_port, mlflow_port = _free_port(), _free_port()
    ours = [sys.executable, "-m", "flows", "serve-api", "--params", str(params_path), "--port", str(ours_port)]
    theirs = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    theirs += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port)]
    targets = {
        "serve-api": (
            ours,
            f"http://127.0.0.1:{ours_port}/health",
            f"http://127.0.0.1:{ours_port}/predict",
            [json.dumps({"rows": [row]}).encode() for row in records],
        )
    }
    if with_mlflow:
        targets["mlflow serve"] = (
            theirs,
            f"http://127.0.0.1:{mlflow_port}/ping",
            f"http://127.0.0.1:{mlflow_port}/invocations",
            [json.dumps({"dataframe_records": [row]}).encode() for row in records],
        )
    return targets


def _online(params_path: Path, source: Path, work: Path, requests: int, seconds: float) -> dict:
    targets = _targets(params_path, source, with_mlflow=True)
    results: dict = {}
    servers = {}
    try:
        for label, (command, health, _, _) in targets.items():
            servers[label] = _start(command, health, work)
        for concurrency in (1, 4, 16, 64):
            for label, (_, _, url, bodies) in targets.items():
                budget = requests if concurrency > 1 else max(requests // 4, 100)
                result = asyncio.run(_load(url, bodies, concurrency, budget, seconds))
                result.pop("latencies_ms")
                results[(label, concurrency)] = result
    finally:
        for server in servers.values():
            _stop(server)
    return results


def _steady(params_path: Path, source: Path, work: Path, seconds: float) -> dict:
    """serve-api alone at concurrency 16 for ``seconds``: every latency kept, for the percentiles and histogram."""
    command, health, url, bodies = _targets(params_path, source, with_mlflow=False)["serve-api"]
    server = _start(command, health, work)
    try:
        return asyncio.run(_load(url, bodies, 16, 10**9, seconds))
    finally:
        _stop(server)


def _shadow(params_path: Path, source: Path, work: Path, requests: int, seconds: float, rounds: int) -> dict:
    """One serve-api at concurrency 64, alternating ``rounds`` times between no release and a shadow release of a
    second version (started and aborted in the registry; the server follows within serve.reload_seconds). Requests,
    seconds and latencies are pooled per condition; /metrics says how many rows the shadow scored or dropped."""
    import httpx
    from mlflow import MlflowClient

    from optiflow.release.registry import PROMOTION_TAG, STAGED
    from optiflow.release.rollout import end_release, start_release

    challenger = _register(params_path, work / "challenger", seed_offset=1)
    client = MlflowClient()
    command, health, url, bodies = _targets(params_path, source, with_mlflow=False)["serve-api"]
    command = [*command, "-S", "serve.reload_seconds=0.5"]
    metrics_url = health.replace("/health", "/metrics")

    def following(mode: str | None) -> dict:
        deadline = time.monotonic() + 60
        while (metrics := httpx.get(metrics_url, timeout=10).json())["release"]["mode"] != mode:
            if time.monotonic() > deadline:
                raise SystemExit(f"serve-api did not follow the release to mode {mode}: {metrics['release']}")
            time.sleep(0.2)
        return metrics

    pooled: dict[str, dict] = {"off": {"latencies": [], "seconds": 0.0, "errors": 0}, "on": {}}
    pooled["on"] = {"latencies": [], "seconds": 0.0, "errors": 0, "shadow_rows": 0, "dropped_jobs": 0}
    server = _start(command, health, work)
    try:
        for _ in range(rounds):
            for condition in ("off", "on"):
                state = None
                if condition == "on":
                    client.set_model_version_tag(NAME, challenger, PROMOTION_TAG, STAGED)
                    state = start_release(NAME, "champion", "challenger", challenger, "shadow", 0.0, time.time())
                before = following("shadow" if state else None)["release"]
                result = asyncio.run(_load(url, bodies, 64, requests, seconds))
                after = httpx.get(metrics_url, timeout=10).json()["release"]
                if state is not None:
                    time.sleep(2)  # let the shadow thread drain its queue before the release ends
                    drained = httpx.get(metrics_url, timeout=10).json()["release"]
                    end_release(state, "aborted", "champion", "previous", "challenger", {"by": "bench"})
                    following(None)
                    pooled["on"]["shadow_rows"] += drained["shadow_rows"] - before["shadow_rows"]
                    pooled["on"]["dropped_jobs"] += after["shadow_jobs_dropped"] - before["shadow_jobs_dropped"]
                bucket = pooled[condition]
                bucket["latencies"] += result["latencies_ms"]
                bucket["seconds"] += result["n"] / result["rps"]
                bucket["errors"] += result["errors"]
    finally:
        _stop(server)
    summary = {}
    for condition, bucket in pooled.items():
        latencies = bucket.pop("latencies")
        cuts = statistics.quantiles(latencies, n=100)
        summary[condition] = {
            **bucket,
            "n": len(latencies),
            "rps": len(latencies) / bucket["seconds"],
            "p50": cuts[49],
            "p95": cuts[94],
            "p99": cuts[98],
        }
    return summary


HISTOGRAM_EDGES_MS = (0, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500, 1000, 2500, float("inf"))


def histogram(latencies_ms: list[float]) -> list[tuple[str, int]]:
    counts = np.histogram(latencies_ms, bins=np.array(HISTOGRAM_EDGES_MS))[0]
    labels = [
        f"{a:g}-{b:g} ms" if b != float("inf") else f">= {a:g} ms" for a, b in itertools.pairwise(HISTOGRAM_EDGES_MS)
    ]
    return list(zip(labels, counts.tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the batch throughput run")
    parser.add_argument("--cache-rows", type=int, default=50_000, help="rows for the cache runs")
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000", help="row counts of the size runs")
    parser.add_argument("--requests", type=int, default=4000, help="most requests per server and concurrency")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds per server and concurrency")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="seconds of the steady load at 16")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per small job (median)")
    parser.add_argument("--shadow-rounds", type=int, default=2, help="alternations of shadow off and on")
    parser.add_argument(
        "--skip", default="", help="comma-separated: onnx, small, batch, sizes, cache, online, steady, shadow"
    )
    parser.add_argument("--rss-child", nargs=3, metavar=("PARAMS", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*(Path(value) for value in args.rss_child))
        return
    skip = set(filter(None, args.skip.split(",")))
    for key, value in _env(Path(tempfile.gettempdir())).items():
        if key.startswith(("MLFLOW_ENABLE", "MLFLOW_DISABLE", "DO_NOT", "PREFECT_SERVER_ANALYTICS")):
            os.environ.setdefault(key, value)
    record = Recorder("serving", keep_previous=bool(skip))  # a partial run keeps the other sections' figures
    print(
        f"Optiflow serving benchmark ({os.cpu_count()} CPUs, hist_gradient_boosting, one run; load average "
        f"{os.getloadavg()[0]:.2f} at start)",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="optiflow-serving-bench-"))
    try:
        params_path = _project(work)
        shipped = REPO / "data" / "raw" / "wa_churn.csv.gz"
        batch_file = _make_file(shipped, work / "batch.csv", args.rows, seed=1)
        if "onnx" not in skip:
            onnx = record.figure("onnx", _onnx(params_path, batch_file))
            print(
                f"\n== ONNX Runtime vs the Python model (same process, same rows)\nparity at registration: "
                f"{onnx['parity']}"
            )
            print(f"{'single-row predict_proba, p50 ms':60} {'python':>9} {'onnx':>9}")
            print(f"{'  1 row':60} {onnx['python_ms']:9.3f} {onnx['onnx_ms']:9.3f}")
            print(f"{'  300 rows':60} {onnx['python_batch_ms']:9.3f} {onnx['onnx_batch_ms']:9.3f}")
            record.goal(
                "single-row latency, Python model / ONNX graph",
                onnx["python_ms"] / onnx["onnx_ms"],
                3,
                True,
                "the Python model in the same process",
            )
        if "small" not in skip:
            jobs = record.figure("small_jobs", _small_jobs(params_path, work, args.repeats))
            print(f"\n== Small jobs, fresh processes (median of {args.repeats}, alternated)")
            for label, values in jobs.items():
                runs = ", ".join(f"{value:.1f}" for value in values["runs"])
                print(f"{label:60} {values['median']:7.2f} s   ({runs})")
            bare = jobs["bare script (mlflow.pyfunc.load_model + predict)"]["median"]
            record.goal(
                "optiflow predict (50 rows) / bare pyfunc script",
                jobs["optiflow predict, 50 rows"]["median"] / bare,
                2,
                False,
                "a bare script: mlflow.pyfunc.load_model + predict, fresh process",
            )
            ready = jobs["optiflow serve-api, until /health answers"]["median"]
            record.goal(
                "serve-api ready / bare pyfunc script",
                ready / bare,
                2,
                False,
                "a bare script: mlflow.pyfunc.load_model + predict, fresh process",
            )
        if "batch" not in skip:
            batch = record.figure("batch", _batch(params_path, batch_file, work))
            print(f"\n== Batch scoring, {batch['rows']:,} rows ({batch['runtime']} runtime)")
            print(f"{'':60} {'rows/s':>12}")
            print(f"{'per-row predict loop (500 rows)':60} {batch['per_row']:12,.0f}")
            print(f"{'one in-memory predict_proba call (typed frame)':60} {batch['single']:12,.0f}")
            print(f"{'one call end to end (pandas read, checks, predict, write)':60} {batch['single_e2e']:12,.0f}")
            label = f"chunked, overlapped ({batch['chunk_rows']:,} rows x {batch['workers']} workers, read..write)"
            print(f"{label:60} {batch['chunked']:12,.0f}")
            print(f"{'chunked, 1 worker':60} {batch['chunked_1_worker']:12,.0f}")
            print(f"{'  chunked / one call end to end':60} {batch['chunked'] / batch['single_e2e']:12.2f}")
            record.goal(
                "chunked scoring / per-row loop",
                batch["chunked"] / batch["per_row"],
                100,
                True,
                "a per-row predict loop",
            )
            record.goal(
                f"chunked scoring (read..write) / one in-memory call, {batch['rows']:,} rows",
                batch["chunked"] / batch["single"],
                1.0,
                True,
                "one predict_proba call on the typed frame already in memory",
            )
        if "sizes" not in skip:
            runs = []
            print("\n== Scoring time and peak RSS by rows (own process, CSV in, Parquet out)")
            for index, rows in enumerate(int(value) for value in args.sizes.split(",")):
                source = _make_file(shipped, work / f"size-{rows}.csv", rows, seed=10 + index)
                run = _rss(params_path, source, work)
                source.unlink()
                runs.append(run)
                print(
                    f"{format(run['rows'], ',') + ' rows':40} {run['seconds']:8.1f} s {run['peak_mb']:8.0f} MB  "
                    f"{run['rows'] / run['seconds']:10,.0f} rows/s",
                    flush=True,
                )
            record.figure("sizes", runs)
            by_rows = {run["rows"]: run for run in runs}
            if 1_000_000 in by_rows and 10_000_000 in by_rows:
                record.goal(
                    "peak RSS 10M rows / 1M rows",
                    by_rows[10_000_000]["peak_mb"] / by_rows[1_000_000]["peak_mb"],
                    1.5,
                    False,
                    "scoring 1M rows",
                )
        if "cache" not in skip:
            cache_file = _make_file(shipped, work / "cache.csv", args.cache_rows, seed=4)
            cached = {reasons: _cache(params_path, cache_file, work, reasons) for reasons in (3, 0)}
            record.figure(
                "cache",
                {str(k): dict(zip(("cold_s", "warm_s", "hits", "rows"), v, strict=True)) for k, v in cached.items()},
            )
            print(f"\n== Prediction cache, {args.cache_rows:,} distinct rows")
            for reasons, (cold, warm, hits, rows) in cached.items():
                name = f"{reasons} reason codes" if reasons else "no reason codes"
                print(f"{'  ' + name + ': first run, fills the cache':60} {cold:8.2f} s ({rows / cold:,.0f} rows/s)")
                print(
                    f"{'  ' + name + ': re-run, ' + format(hits, ',') + ' hits':60} {warm:8.2f} s  "
                    f"speed-up {cold / warm:.1f}x"
                )
        if "online" not in skip:
            online = _online(params_path, batch_file, work, args.requests, args.seconds)
            record.figure("online", [{"server": name, "concurrency": c, **r} for (name, c), r in online.items()])
            print("\n== Online, 1 row per request")
            print(f"{'server':16} {'concurrency':>11} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'n':>6}")
            for (name, concurrency), result in online.items():
                errors = f"  {result['errors']} errors" if result["errors"] else ""
                print(
                    f"{name:16} {concurrency:11d} {result['rps']:9.0f} {result['p50']:8.1f} {result['p95']:8.1f} "
                    f"{result['p99']:8.1f} {result['n']:6d}{errors}"
                )
            ours, theirs = online[("serve-api", 64)], online[("mlflow serve", 64)]
            record.goal(
                "req/s serve-api / mlflow serve at concurrency 64",
                ours["rps"] / theirs["rps"],
                3,
                True,
                "mlflow models serve, same model, same requests",
            )
            record.goal(
                "p95 serve-api / mlflow serve at concurrency 64",
                ours["p95"] / theirs["p95"],
                1,
                False,
                "mlflow models serve, same model, same requests",
            )
        if "steady" not in skip:
            steady = _steady(params_path, batch_file, work, args.steady_seconds)
            latencies = steady.pop("latencies_ms")
            steady["histogram"] = histogram(latencies)
            record.figure("steady", steady)
            print(
                f"\n== serve-api at concurrency 16 for {args.steady_seconds:.0f} s: {steady['n']:,} requests, "
                f"{steady['rps']:.0f} req/s, {steady['errors']} errors"
            )
            print(f"p50 {steady['p50']:.1f} ms   p99 {steady['p99']:.1f} ms   max {steady['max']:.1f} ms")
            widest = max(count for _, count in steady["histogram"]) or 1
            for label, count in steady["histogram"]:
                print(f"  {label:>14} {count:7d} {'#' * round(50 * count / widest)}")
            record.goal(
                "p99 / p50 at concurrency 16, 60 s", steady["p99"] / steady["p50"], 5, False, "the same run's p50"
            )
            record.goal(
                "slowest request at concurrency 16, 60 s", steady["max"], 250, False, "a fixed bound", unit=" ms"
            )
        if "shadow" not in skip:
            shadow = record.figure(
                "shadow", _shadow(params_path, batch_file, work, args.requests, args.seconds, args.shadow_rounds)
            )
            off, on = shadow["off"], shadow["on"]
            print(
                f"\n== serve-api at concurrency 64, 1 row per request, shadow release off vs on "
                f"({args.shadow_rounds} alternations on one server, pooled)"
            )
            print(f"{'shadow':8} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'n':>7} {'errors':>7}")
            for name, result in (("off", off), ("on", on)):
                print(
                    f"{name:8} {result['rps']:9.0f} {result['p50']:8.1f} {result['p95']:8.1f} {result['p99']:8.1f} "
                    f"{result['n']:7d} {result['errors']:7d}"
                )
            print(
                f"shadow scored {on['shadow_rows']:,} of {on['n']:,} answered rows off the response path "
                f"(+ warm-up requests); {on['dropped_jobs']} shadow batches dropped (queue full)"
            )
            record.goal(
                "req/s with shadow / without at concurrency 64", on["rps"] / off["rps"], 0.8, True, "no release"
            )
            record.goal(
                "p99 with shadow / without at concurrency 64", on["p99"] / off["p99"], 1.25, False, "no release"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        record.save()


if __name__ == "__main__":
    main()
