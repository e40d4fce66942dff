"""Monitoring benchmark on the shipped data, measured in one run (printed, never asserted in tests).

  scale        drift check (champion scoring + Evidently report) time and peak memory at 7k, 100k and 1M rows,
               each size in its own process; with sampling (monitor.sample_rows) the decision must not change
  columns      drift check time with the feature columns repeated 1, 2 and 4 times (19 to 76 columns), 100k rows,
               the widths taken in turn in one process
  false alarms share of undrifted batches that would trigger a retraining            (goal: 0)
  detection    share of drifted scenario batches that trigger a retraining            (goal: 100%)
  delay        batches until a gradual price increase (0 -> gradual_max_increase) triggers

The champion here is the hist_gradient_boosting family fitted on the train split with params.yaml values; the
decision is optiflow.monitoring.retraining.decide on an empty history (no cool-down), i.e. whether the batch triggers.

Usage: python bench/monitoring.py [--seeds 5] [--controls 25] [--sizes 7043,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results import Recorder  # noqa: E402


def _setup():
    """Shipped data -> typed table -> split -> a fitted champion and its test figures."""
    import numpy as np

    from optiflow.assess.metrics import classification_metrics
    from optiflow.config import load_config
    from optiflow.data.ingest import load_dataset
    from optiflow.data.schema import resolve_schema
    from optiflow.data.split import labels, split_dataset
    from optiflow.modeling.families import build_pipeline

    config = load_config(REPO / "params.yaml")
    params = config.params
    frame, _ = load_dataset(config.source, params.data)
    splits = split_dataset(frame, params.data, params.split, params.seed)
    schema = resolve_schema(frame, params.data)
    features = list(schema.features)
    family = "hist_gradient_boosting"
    model = build_pipeline(family, params.train.families[family], schema, params.seed)
    model.fit(splits.train[features], labels(splits.train, params.data))
    test_scores = model.predict_proba(splits.test[features])[:, 1]
    champion_test = classification_metrics(labels(splits.test, params.data), test_scores, 0.5)
    reference_scores = model.predict_proba(splits.reference[features])[:, 1]
    return config, frame, splits, schema, model, champion_test, np.asarray(reference_scores)


def _check(setup, batch, limit):
    """Score and drift-check one batch as the monitoring task does; returns (verdict, result, seconds)."""
    import pandas as pd

    from optiflow.data.sampling import sample_rows
    from optiflow.monitoring.drift import batch_quality, check_drift, label_array
    from optiflow.monitoring.retraining import Signals, decide

    config, _, splits, schema, model, champion_test, reference_scores = setup
    params = config.params
    monitor = params.monitor.model_copy(update={"sample_rows": limit})
    started = time.perf_counter()
    checked = sample_rows(batch, monitor.sample_rows, params.seed)
    scores = model.predict_proba(checked[list(schema.features)])[:, 1]
    labels = label_array(checked, params.data)
    quality = batch_quality(labels, scores, 0.5, champion_test) if labels is not None else None
    result, _ = check_drift(
        splits.reference,
        checked,
        schema,
        monitor,
        reference_scores=reference_scores,
        current_scores=scores,
        quality=quality,
        rows=len(batch),
    )
    seconds = time.perf_counter() - started
    signals = Signals(
        result.drift_share,
        result.drifted_columns,
        result.prediction_drift,
        result.prediction_drifted,
        result.quality_drop,
        labelled_rows=len(batch),
    )
    no_history = pd.DataFrame(columns=["batch_id", "at", "decision", "labelled_rows"])
    verdict = decide(signals, no_history, monitor, datetime.now(UTC))
    return verdict, result, seconds


def _widened(frame, schema, times: int):
    """The frame with every feature column repeated ``times`` times (suffixes _2, _3, ...) and its schema."""
    from optiflow.data.schema import Schema

    if times == 1:
        return frame, schema
    extra = {f"{c}_{k}": frame[c] for k in range(2, times + 1) for c in schema.features}
    wide = frame.assign(**extra)
    numeric = schema.numeric + tuple(f"{c}_{k}" for k in range(2, times + 1) for c in schema.numeric)
    categorical = schema.categorical + tuple(f"{c}_{k}" for k in range(2, times + 1) for c in schema.categorical)
    return wide, Schema(numeric, categorical)


# rounds of timed checks, every width once per round; 9 lets the 95% interval of the median per-round ratio leave out
# the most extreme round at each end (6 is the fewest that give such an interval at all)
WIDTH_ROUNDS = 9


def _widths(rows: int, repeats: tuple[int, ...]) -> list[dict]:
    """In a child process: the drift check of a price-increase batch with the feature columns repeated 1, 2, ...
    times, the widths taken in turn (optiflow.timing.rotated_seconds) after a small warm-up each, so that a slow
    spell of the machine falls on every width alike and the cost ratio between two widths is taken round by round.
    Medians of separate blocks gave 3.37x to 4.25x for 4x the columns across runs of the same code."""
    import numpy as np

    from optiflow.data.simulate import make_batch, scenarios
    from optiflow.monitoring.drift import check_drift
    from optiflow.timing import rotated_seconds

    config, frame, splits, schema, model, _, reference_scores = _setup()
    price_increase = scenarios(frame, config.params.data, config.params.simulate)[0]
    batch = make_batch(price_increase, frame, config.params.data, rows, np.random.default_rng(1))
    monitor = config.params.monitor.model_copy(update={"sample_rows": None})
    scores = model.predict_proba(batch[list(schema.features)])[:, 1]
    checks = {}
    for times in repeats:
        reference, wide_schema = _widened(splits.reference, schema, times)
        wide_batch, _ = _widened(batch, schema, times)
        checks[times] = lambda head, r=reference, b=wide_batch, s=wide_schema: check_drift(
            r, b.head(head), s, monitor, reference_scores=reference_scores, current_scores=scores[:head], rows=head
        )
        checks[times](1000)  # warm-up
    runs = rotated_seconds(
        {str(times): lambda check=checks[times]: check(rows) for times in repeats},
        repeats=WIDTH_ROUNDS,
        warmup=0,
        threads=None,
    )
    return [
        {
            "rows": rows,
            "columns": len(schema.features) * times,
            "seconds": float(np.median(runs[str(times)])),
            "runs": runs[str(times)].tolist(),
        }
        for times in repeats
    ]


def _one_size(rows: int, sample_rows: int | None) -> dict:
    """In a child process: a drifted (price increase) batch of ``rows`` rows drawn from the whole table."""
    import numpy as np

    from optiflow.data.simulate import make_batch, scenarios

    setup = _setup()
    config, frame = setup[0], setup[1]
    price_increase = scenarios(frame, config.params.data, config.params.simulate)[0]
    batch = make_batch(price_increase, frame, config.params.data, rows, np.random.default_rng(1))
    _check(setup, batch.head(1000), sample_rows)  # warm-up: imports and first Evidently run
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    verdict, result, seconds = _check(setup, batch, sample_rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": rows,
        "sample_rows": sample_rows,
        "seconds": seconds,
        "peak_mb": peak / 1024,
        "added_mb": (peak - baseline) / 1024,
        "action": verdict.action,
        "drifted": list(result.drifted_columns),
        "drift_share": result.drift_share,
    }


def _child(rows: int, sample: int | None = None, widths: str = "") -> Any:
    """One drift check (or the width runs) in its own process (its peak memory is its own)."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(rows), "--sample", str(sample or 0)]
        + (["--width-run", "--widths", widths] if widths else []),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{rows} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _scale(sizes: list[int]) -> list[dict]:
    return [
        _child(rows, limit) for rows in sizes for limit in [None] + [cap for cap in (100_000, 20_000) if cap < rows]
    ]


def _full_strength_rows(scenario, pool, rows: int) -> int:
    """The largest batch (at most ``rows``) the pool can fill at the scenario's full share without drawing a row
    twice: the pool holds the rows no model trained on (a few hundred on the shipped data), and a rare segment at
    60% of 500 rows would otherwise be diluted to a fraction of the shift it stands for."""
    from optiflow.data.simulate import scenario_rows

    if scenario.kind == "scale":
        return rows
    chosen = scenario_rows(scenario, pool)
    inside, outside, share = int(chosen.sum()), int((~chosen).sum()), scenario.share
    return min(rows, int(inside / share) if share else rows, int(outside / (1 - share)) if share < 1 else rows)


def _rates(seeds: int, controls: int, gradual_batches: int) -> dict:
    import numpy as np

    from optiflow.data.simulate import gradual_series, make_batch, scenarios

    setup = _setup()
    config, _, splits = setup[0], setup[1], setup[2]
    params = config.params
    false_alarms, control_shares, control_tests = 0, [], {}
    for seed in range(controls):
        rng = np.random.default_rng(1000 + seed)
        batch = make_batch(None, splits.pool, params.data, params.simulate.batch_rows, rng)
        verdict, result, _ = _check(setup, batch, params.monitor.sample_rows)
        false_alarms += verdict.action != "ignored"
        control_shares.append(result.drift_share)
        control_tests = result.column_tests  # chosen by type, number of values and batch size (the same each time)
    detected: dict[str, list[bool]] = {}
    sizes: dict[str, int] = {}
    for scenario in scenarios(splits.pool, params.data, params.simulate):
        sizes[scenario.name] = rows = _full_strength_rows(scenario, splits.pool, params.simulate.batch_rows)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            batch = make_batch(scenario, splits.pool, params.data, rows, rng)
            verdict, _, _ = _check(setup, batch, params.monitor.sample_rows)
            # detected as a control batch counts as a false alarm: any verdict but "ignored" (a batch below
            # monitor.min_new_rows is "debounced", its trigger still fired)
            detected.setdefault(scenario.name, []).append(verdict.action != "ignored")
    delays = []
    simulate = params.simulate.model_copy(update={"gradual_batches": gradual_batches})
    for seed in range(seeds):
        first = (None, None, "")
        for index, (_, batch, increase) in enumerate(gradual_series(splits.pool, params.data, simulate, seed)):
            verdict = _check(setup, batch, params.monitor.sample_rows)[0]
            if verdict.action == "retrain":
                first = (index, increase, "; ".join(verdict.triggers))
                break
        delays.append(first)
    return {
        "controls": controls,
        "false_alarms": false_alarms,
        "max_control_share": max(control_shares),
        "tests": sorted(set(control_tests.values())),
        "detected": {name: sum(hits) / len(hits) for name, hits in detected.items()},
        "scenario_rows": sizes,
        "delays": delays,
        "gradual_batches": gradual_batches,
        "gradual_max": simulate.gradual_max_increase,
        "batch_rows": params.simulate.batch_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="batches per drifted scenario and gradual series")
    parser.add_argument("--controls", type=int, default=25, help="undrifted control batches")
    parser.add_argument("--sizes", default="7043,100000,1000000")
    parser.add_argument("--gradual-batches", type=int, default=21, help="steps of the gradual series (0 to max)")
    parser.add_argument("--width-rows", type=int, default=100_000, help="rows of the column runs")
    parser.add_argument("--widths", default="1,2,4", help="how many times the feature columns are repeated")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--width-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    widths = tuple(int(times) for times in args.widths.split(","))
    if args.one:
        print(json.dumps(_widths(args.one, widths) if args.width_run else _one_size(args.one, args.sample or None)))
        return

    record = Recorder("monitoring")
    scale = record.figure("sizes", _scale([int(size) for size in args.sizes.split(",")]))
    widths = record.figure("columns", _child(args.width_rows, widths=args.widths))
    rates = _rates(args.seeds, args.controls, args.gradual_batches)
    record.figure("rates", {key: value for key, value in rates.items() if key != "delays"})

    print(f"Optiflow monitoring benchmark (shipped data, {os.cpu_count()} CPUs, OMP_NUM_THREADS=1)")
    print("Drift check of a price-increase batch: score with the champion + Evidently report (reference 1,000 rows)")
    print(f"{'rows':>10} {'sampled to':>11} {'time':>8} {'peak RSS':>10} {'added':>9}  decision  drifted columns")
    decisions: dict[int, set] = {}
    for run in scale:
        sampled = f"{run['sample_rows']:,}" if run["sample_rows"] else "all"
        print(
            f"{run['rows']:>10,} {sampled:>11} {run['seconds']:7.2f}s {run['peak_mb']:8.0f}MB {run['added_mb']:7.0f}MB"
            f"  {run['action']:8}  {', '.join(run['drifted']) or '-'}"
        )
        decisions.setdefault(run["rows"], set()).add((run["action"], tuple(run["drifted"])))
    same = all(len(found) == 1 for found in decisions.values())
    print(f"sampling gives the same decision and drifted columns at every size: {'yes' if same else 'NO'}")
    print(f"Drift check time by columns ({args.width_rows:,} rows, every row checked)")
    for run in widths:
        runs = ", ".join(f"{seconds:.2f}" for seconds in run["runs"])
        print(f"{run['columns']:>10} columns {run['seconds']:8.2f}s  (median of {runs})")
    import numpy as np

    from optiflow.timing import speedup

    narrow, wide = min(widths, key=lambda run: run["columns"]), max(widths, key=lambda run: run["columns"])
    # cost ratio round by round: how many times faster the narrow check ran than the wide one in the same round
    cost = speedup(np.array(narrow["runs"]), np.array(wide["runs"]))
    print(f"{narrow['columns']} columns vs {wide['columns']}, paired by round: {cost}")
    record.goal(
        f"drift check time, {wide['columns'] // narrow['columns']}x the columns / 1x (median of paired rounds)",
        cost.ratio,
        wide["columns"] / narrow["columns"],
        False,
        "linear growth in columns",
    )
    record.goal(
        "sampling changes the drift decision (sizes where it does)",
        sum(len(f) > 1 for f in decisions.values()),
        0,
        False,
        "the decision on every row",
        unit="",
    )
    print()
    share = rates["false_alarms"] / rates["controls"]
    print(f"undrifted control batches ({rates['batch_rows']} rows of the simulation pool): {rates['controls']}")
    print(
        f"  false triggers: {rates['false_alarms']} ({share:.0%})   goal 0   {'met' if share == 0 else 'NOT MET'}"
        f"   (largest control drift share {rates['max_control_share']:.3f}; tests: {', '.join(rates['tests'])})"
    )
    overall = sum(rates["detected"].values()) / len(rates["detected"])
    print(
        f"drifted scenario batches ({args.seeds} per scenario): detection rate {overall:.0%}   goal 100%   "
        f"{'met' if overall == 1 else 'NOT MET'}"
    )
    for name, rate in rates["detected"].items():
        print(f"  {name:16} {rate:4.0%}   batches of {rates['scenario_rows'][name]} rows (full strength from the pool)")
    steps = rates["gradual_batches"]
    print(
        f"gradual price increase, {steps} batches from +0% to +{rates['gradual_max']:.0%} "
        f"(+{rates['gradual_max'] / (steps - 1):.1%} per batch):"
    )
    for seed, (index, increase, triggers) in enumerate(rates["delays"]):
        found = "never" if index is None else f"batch {index + 1} (increase +{increase:.1%}): {triggers}"
        print(f"  series {seed}: first trigger at {found}")
    record.goal("false triggers on undrifted batches", rates["false_alarms"], 0, False, "no retraining", unit="")
    record.goal("detection rate of drifted scenarios", overall, 1.0, True, "every drifted batch", unit="")
    record.save()


if __name__ == "__main__":
    main()
