"""What every benchmark records: bench/results/<name>.json with its figures, its goals (measured vs target, met or
not, and the anchor the ratio is taken against) and the machine it ran on, for bench/report.py to turn into
docs/benchmarks.md. Each goal is also printed as one line when it is measured."""

from __future__ import annotations

import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    """The machine and how busy it was: every figure is a ratio measured in one run, but neighbours still show."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            model,
        )
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal"))
        memory = round(int(total.split()[1]) / 1024 / 1024, 1)
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "memory_gib": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


class _Tee(io.TextIOBase):
    """stdout that also keeps a copy: what the benchmark printed goes into its results file verbatim."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class Recorder:
    """Collects one benchmark's figures and goals, and what it prints; ``save`` writes them with the machine, at
    start and at end."""

    def __init__(self, name: str, argv: list[str] | None = None, keep_previous: bool = False) -> None:
        self.name, self.started = name, time.time()
        self.tee = sys.stdout = _Tee(sys.stdout)
        previous = RESULTS / f"{name}.json"
        self.previous = json.loads(previous.read_text()) if keep_previous and previous.is_file() else None
        self.payload: dict[str, Any] = {
            "benchmark": name,
            "command": " ".join(["python", f"bench/{name}.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine_at_start": machine(),
            "figures": {},
            "goals": [],
        }

    def figure(self, key: str, value: Any) -> Any:
        self.payload["figures"][key] = value
        return value

    def goal(self, what: str, measured: float, target: float, higher: bool, anchor: str, unit: str = " x") -> bool:
        """Record and print one goal: ``measured`` against ``target`` (>= when ``higher``, else <=)."""
        met = measured >= target if higher else measured <= target
        self.payload["goals"].append(
            {
                "goal": what,
                "measured": round(float(measured), 4),
                "target": f"{'>=' if higher else '<='} {target:g}{unit}",
                "met": bool(met),
                "anchor": anchor,
            }
        )
        print(
            f"GOAL {what}: {measured:.3g}{unit} (goal {'>=' if higher else '<='} {target:g}{unit}, vs {anchor}): "
            f"{'met' if met else 'MISSED'}",
            flush=True,
        )
        return met

    def save(self) -> Path:
        self.payload["machine_at_end"] = machine()
        self.payload["seconds"] = round(time.time() - self.started, 1)
        self.payload["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.payload["output"] = self.tee.copy.getvalue()
        if self.previous is not None:  # a partial run: the sections it skipped keep their last figures and goals
            mine = {goal["goal"] for goal in self.payload["goals"]}
            self.payload["figures"] = {**self.previous["figures"], **self.payload["figures"]}
            self.payload["goals"] = [g for g in self.previous["goals"] if g["goal"] not in mine] + self.payload["goals"]
            self.payload["output"] = self.previous.get("output", "") + "\n" + self.payload["output"]
            self.payload["command"] = f"{self.previous['command']}; then {self.payload['command']}"
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(self.payload, indent=1, default=str) + "\n")
        print(f"results: {path.relative_to(REPO)}", flush=True)
        return path
