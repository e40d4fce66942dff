"""Pipeline benchmark on the shipped data, measured side by side in one run (printed, never asserted in tests).

  cold flow         `python -m flows train` in a fresh copy of the repo with a fresh PREFECT_HOME
  cached re-run     the same command again: every stage a Prefect cache hit       (goal: <= 0.2 x cold)
  no-op dvc repro   `dvc repro` with nothing changed                               (goal: <= 3 s)
  overhead          the flow vs the same stage functions called in plain Python    (goal: <= 1.25 x)

Usage: python bench/pipeline.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402

OUTPUTS = ("reports", "models", "data/interim", "data/processed", "data/reference")


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def _fresh_copy(work: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    project = work / "optiflow"
    for name in files:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    return project


def _overhead(project: Path, repeats: int) -> dict[str, object]:
    """In this process, with the ephemeral API already up: the flow (cache bypassed) vs plain stage calls."""
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    from flows.training import training
    from optiflow.config import load_config
    from tasks.stages import STAGES, task_for

    params = str(project / "params.yaml")
    config = load_config(params)
    training(params)  # starts the API and warms imports; not timed

    cold_in_process, cached_in_process, plain, flow = [], [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for spec in STAGES:
            task_for(spec).fn(config)
        plain.append(time.perf_counter() - started)

        started = time.perf_counter()
        with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
            training(params)
        flow.append(time.perf_counter() - started)

        for output in OUTPUTS:
            shutil.rmtree(project / output, ignore_errors=True)
        started = time.perf_counter()
        training(params)
        cold_in_process.append(time.perf_counter() - started)

        started = time.perf_counter()
        training(params)
        cached_in_process.append(time.perf_counter() - started)
    return {
        "plain": statistics.median(plain),
        "flow": statistics.median(flow),
        "cold_in_process": statistics.median(cold_in_process),
        "cached_in_process": statistics.median(cached_in_process),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-only", metavar="PROJECT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.overhead_only:
        print(json.dumps(_overhead(Path(args.overhead_only), args.repeats)))
        return
    record = Recorder("pipeline")

    work = Path(tempfile.mkdtemp(prefix="optiflow-bench-"))
    try:
        project = _fresh_copy(work)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PREFECT_HOME": str(work / "prefect-home"),
            "MPLCONFIGDIR": str(work / "matplotlib"),
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        flow_cmd = [sys.executable, "-m", "flows", "train"]
        cold = _timed(flow_cmd, project, env)
        cached = statistics.median(_timed(flow_cmd, project, env) for _ in range(args.repeats))

        for command in (
            ["git", "init", "--quiet"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
        ):
            subprocess.run(command, cwd=project, check=True, capture_output=True)
        first_repro = _timed(["dvc", "repro"], project, env)
        noop = statistics.median(_timed(["dvc", "repro"], project, env) for _ in range(args.repeats))

        done = subprocess.run(
            [sys.executable, __file__, "--repeats", str(args.repeats), "--overhead-only", str(project)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        inproc = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def verdict(ok: bool) -> str:
        return "meets goal" if ok else "MISSES goal"

    print(f"Optiflow pipeline benchmark (shipped data, {os.cpu_count()} CPUs, median of {args.repeats})")
    print(f"{'measure':58} {'value':>10}  goal")
    print(f"{'cold flow, CLI (fresh PREFECT_HOME, API start incl.)':58} {cold:9.2f}s")
    print(f"{'cached re-run, CLI (all stages cache hits)':58} {cached:9.2f}s")
    print(f"{'  ratio cached/cold, CLI':58} {cached / cold:10.3f}  <= 0.2  {verdict(cached / cold <= 0.2)}")
    print(f"{'cold flow, in process (API already up)':58} {inproc['cold_in_process']:9.2f}s")
    print(f"{'cached re-run, in process (API already up)':58} {inproc['cached_in_process']:9.2f}s")
    ratio = inproc["cached_in_process"] / inproc["cold_in_process"]
    print(f"{'  ratio cached/cold, in process':58} {ratio:10.3f}  <= 0.2  {verdict(ratio <= 0.2)}")
    print(f"{'first dvc repro (all stages)':58} {first_repro:9.2f}s")
    print(f"{'no-op dvc repro':58} {noop:9.2f}s  <= 3 s  {verdict(noop <= 3)}")
    print(f"{'stage functions in plain Python':58} {inproc['plain']:9.2f}s")
    print(f"{'same stages as a Prefect flow (cache bypassed)':58} {inproc['flow']:9.2f}s")
    overhead = inproc["flow"] / inproc["plain"]
    print(f"{'  ratio flow/plain (orchestration overhead)':58} {overhead:10.3f}  <= 1.25  {verdict(overhead <= 1.25)}")
    record.figure("seconds", {"cold": cold, "cached": cached, "first_repro": first_repro, "noop_repro": noop, **inproc})
    record.goal("cached re-run / cold run (CLI)", cached / cold, 0.2, False, "the cold run of the same command")
    record.goal("no-op dvc repro", noop, 3, False, "a fixed bound", unit=" s")
    record.goal("flow / plain stage functions", overhead, 1.25, False, "the same stage functions in plain Python")
    record.save()


if __name__ == "__main__":
    main()
