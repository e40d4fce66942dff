"""Serving benchmark: one registered model (gradient boosting on the shipped data), measured side by side in one run.

  batch rows/s      a per-row predict loop, one in-memory predict_proba call, and `score_file` (chunked, concurrent,
                    read + validate + score + write)      (goals: chunked >= 100 x per-row, >= 1 x the single call)
  peak RSS          scoring 1M and 10M rows from CSV, each in its own process      (goal: 10M <= 1.5 x 1M)
  cache             a fully cached re-run vs the run that filled the cache
  online            requests/s and p50/p95 latency at concurrency 1, 16, 64: `optiflow serve-api` vs
                    `mlflow models serve` (one row per request, 127.0.0.1)    (goal at 64: >= 3 x req/s, p95 no worse)

Input files are the shipped rows resampled with replacement into a temp dir, with monthly_charges jittered so rows
are distinct (otherwise the cache would hit inside the first run). Load is bounded in requests and seconds.

Usage: python bench/serving.py [--rows 200000] [--big-rows 10000000] [--requests 2000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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

NAME = "optiflow-churn"
BLOCK = 500_000  # rows generated per write


def _env(work: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(work / "prefect-home"),
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
    }
    return env


def _project(work: Path) -> Path:
    """params.yaml and the shipped data in ``work``, one gradient-boosting model registered as champion."""
    import yaml
    from mlflow import MlflowClient

    from optiflow.config import load_config
    from optiflow.data.ingest import load_dataset
    from optiflow.data.schema import resolve_schema
    from optiflow.data.split import labels
    from optiflow.modeling.candidates import save_candidate
    from optiflow.modeling.families import build_pipeline
    from optiflow.release.registry import connect, log_model_version
    from optiflow.release.serving_spec import ServingSpec

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (work / params["data"]["source"]).parent.mkdir(parents=True)
    shutil.copy2(REPO / params["data"]["source"], work / params["data"]["source"])
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    config = load_config(work / "params.yaml")
    frame, _ = load_dataset(config.source, config.params.data)
    schema = resolve_schema(frame, config.params.data)
    family = "hist_gradient_boosting"
    model = build_pipeline(family, config.params.train.families[family], schema, config.params.seed)
    model.fit(frame[list(schema.features)], labels(frame, config.params.data))
    save_candidate(work / "candidate", model, {"family": family, "features": list(schema.features)})
    connect(config)
    spec = ServingSpec.from_frame(frame, schema.features, 0.35, config.params.data, config.params.validation)
    version = log_model_version(
        work / "candidate", model_name=NAME, input_example=frame[list(schema.features)].head(5), spec=spec
    )
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return work / "params.yaml"


def _make_file(source: Path, target: Path, rows: int, seed: int) -> Path:
    """``rows`` shipped rows drawn with replacement (target dropped), monthly_charges jittered to keep rows distinct."""
    shipped = pd.read_csv(source).drop(columns=["churn"])
    rng = np.random.default_rng(seed)
    for start in range(0, rows, BLOCK):
        block = shipped.iloc[rng.integers(0, len(shipped), min(BLOCK, rows - start))].reset_index(drop=True)
        block["monthly_charges"] = (block["monthly_charges"] + rng.uniform(0, 0.5, len(block))).round(4)
        block.to_csv(target, mode="a" if start else "w", header=start == 0, index=False)
    return target


def _scorer(params_path: Path, reasons: int):
    from optiflow.config import load_config
    from optiflow.serving.batch import load_model, make_scorer

    config = load_config(params_path)
    loaded, _ = load_model(config)
    return config, make_scorer(loaded, config, reasons)


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
    started = time.perf_counter()
    frame = pd.read_csv(source)
    good, _ = scorer.check_rows(frame)
    pd.DataFrame({"probability": model.predict_proba(good)[:, 1]}).to_parquet(work / "single.parquet")
    single_e2e = len(frame) / (time.perf_counter() - started)
    summary = score_file(source, work / "chunked.parquet", scorer, config.params.score)
    chunked = summary.rows_scored / summary.seconds
    one_worker = score_file(
        source, work / "chunked1.parquet", scorer, config.params.score.model_copy(update={"workers": 1})
    )
    return {
        "rows": len(typed),
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
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": summary.rows_scored, "seconds": summary.seconds, "peak_mb": peak_mb}))


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


def _start(command: list[str], health: str, work: Path) -> subprocess.Popen:
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
        time.sleep(0.5)
    _stop(server)
    raise SystemExit(f"{' '.join(command)} did not become healthy in 180 s")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


async def _load(url: str, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict[str, float]:
    """``concurrency`` clients, one keep-alive connection each, send until ``requests`` were sent or ``seconds``
    passed. aiohttp, not httpx: httpx's pool itself tops out near 100 req/s at 64 connections here."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + seconds
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
        async with http.post(url, data=bodies[0], headers=headers) as warm_up:
            await warm_up.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "n": len(latencies),
        "errors": errors,
    }


def _online(params_path: Path, source: Path, work: Path, requests: int, seconds: float) -> dict:
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
        ),
        "mlflow serve": (
            theirs,
            f"http://127.0.0.1:{mlflow_port}/ping",
            f"http://127.0.0.1:{mlflow_port}/invocations",
            [json.dumps({"dataframe_records": [row]}).encode() for row in records],
        ),
    }
    results: dict = {}
    servers = {}
    try:
        for label, (command, health, _, _) in targets.items():
            servers[label] = _start(command, health, work)
        for concurrency in (1, 16, 64):
            for label, (_, _, url, bodies) in targets.items():
                budget = requests if concurrency > 1 else max(requests // 4, 100)
                results[(label, concurrency)] = asyncio.run(_load(url, bodies, concurrency, budget, seconds))
    finally:
        for server in servers.values():
            _stop(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows for the batch throughput and cache runs")
    parser.add_argument("--cache-rows", type=int, default=50_000, help="rows for the cache runs")
    parser.add_argument("--small-rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="most requests per server and concurrency")
    parser.add_argument("--seconds", type=float, default=30.0, help="most seconds per server and concurrency")
    parser.add_argument("--rss-child", nargs=3, metavar=("PARAMS", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*(Path(value) for value in args.rss_child))
        return

    work = Path(tempfile.mkdtemp(prefix="optiflow-serving-bench-"))
    try:
        params_path = _project(work)
        shipped = REPO / "data" / "raw" / "wa_churn.csv.gz"
        batch_file = _make_file(shipped, work / "batch.csv", args.rows, seed=1)
        batch = _batch(params_path, batch_file, work)
        cache_file = _make_file(shipped, work / "cache.csv", args.cache_rows, seed=4)
        cached = {reasons: _cache(params_path, cache_file, work, reasons) for reasons in (batch["reasons"], 0)}
        small = _rss(params_path, _make_file(shipped, work / "small.csv", args.small_rows, seed=2), work)
        (work / "small.csv").unlink()
        big = _rss(params_path, _make_file(shipped, work / "big.csv", args.big_rows, seed=3), work)
        (work / "big.csv").unlink()
        online = _online(params_path, batch_file, work, args.requests, args.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def verdict(ok: bool) -> str:
        return "meets goal" if ok else "MISSES goal"

    print(f"Optiflow serving benchmark ({os.cpu_count()} CPUs, hist_gradient_boosting, one run)")
    print(f"{'batch scoring, ' + format(batch['rows'], ',') + ' rows':60} {'rows/s':>12}  goal")
    print(f"{'per-row predict loop (500 rows)':60} {batch['per_row']:12,.0f}")
    print(f"{'one in-memory predict_proba call (typed frame)':60} {batch['single']:12,.0f}")
    print(f"{'one call end to end (pandas read, checks, predict, write)':60} {batch['single_e2e']:12,.0f}")
    label = f"chunked flow ({batch['chunk_rows']:,} rows x {batch['workers']} workers, read..write)"
    print(f"{label:60} {batch['chunked']:12,.0f}")
    print(f"{'chunked flow, 1 worker':60} {batch['chunked_1_worker']:12,.0f}")
    ratio = batch["chunked"] / batch["per_row"]
    print(f"{'  chunked / per-row loop':60} {ratio:12.1f}  >= 100  {verdict(ratio >= 100)}")
    ratio = batch["chunked"] / batch["single"]
    print(f"{'  chunked / one in-memory call':60} {ratio:12.2f}  >= 1  {verdict(ratio >= 1)}")
    print(f"{'  chunked / one call end to end':60} {batch['chunked'] / batch['single_e2e']:12.2f}")
    print(f"{'peak RSS (own process, CSV in, Parquet out)':60} {'MB':>12}")
    for run in (small, big):
        print(
            f"{format(run['rows'], ',') + ' rows (' + format(run['seconds'], '.0f') + ' s)':60} {run['peak_mb']:12.0f}"
        )
    ratio = big["peak_mb"] / small["peak_mb"]
    print(f"{'  ratio':60} {ratio:12.2f}  <= 1.5  {verdict(ratio <= 1.5)}")
    print(f"{'prediction cache, ' + format(args.cache_rows, ',') + ' distinct rows':60} {'seconds':>12}")
    for reasons, (cold, warm, hits, rows) in cached.items():
        name = f"{reasons} reason codes" if reasons else "no reason codes"
        label = f"  {name}: first run, fills the cache ({rows / cold:,.0f} rows/s)"
        print(f"{label:60} {cold:12.2f}")
        print(
            f"{'  ' + name + ': re-run, ' + format(hits, ',') + ' hits':60} {warm:12.2f}  speed-up {cold / warm:.1f}x"
        )
    print(f"{'online, 1 row per request':28} {'concurrency':>11} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'n':>6}")
    for (name, concurrency), result in online.items():
        errors = f"  {result['errors']} errors" if result["errors"] else ""
        print(
            f"{name:28} {concurrency:11d} {result['rps']:9.0f} {result['p50']:8.1f} {result['p95']:8.1f} "
            f"{result['n']:6d}{errors}"
        )
    ours, theirs = online[("serve-api", 64)], online[("mlflow serve", 64)]
    ratio = ours["rps"] / theirs["rps"]
    print(f"{'  req/s serve-api / mlflow serve at 64':60} {ratio:12.2f}  >= 3  {verdict(ratio >= 3)}")
    ok = ours["p95"] <= theirs["p95"]
    print(
        f"{'  p95 serve-api vs mlflow serve at 64 (ms)':60} {ours['p95']:7.1f} vs {theirs['p95']:.1f}  "
        f"no worse  {verdict(ok)}"
    )


if __name__ == "__main__":
    main()
