"""Champion and challenger on live traffic, from the prediction log, and what the release flow does about it.

During a release serve-api scores every row with both models (one answers, the other scores off the response
path), so every comparison is paired on the same rows: agreement, the distance between the score distributions,
latency, the label-free estimated ROC AUC of each (its band from `monitoring.estimate`), and, once labels are joined,
the realised paired AUC difference with its interval (DeLong, the promotion gate's test). `decide_release` turns
that into promote / wait / abort; `watch_champion` compares a freshly promoted champion with itself before promotion
and says whether to roll it back. Every verdict carries the figures it used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from optiflow.assess.paired import PairedComparison, compare_auc
from optiflow.config import ChampionGateParams, ReleaseParams
from optiflow.monitoring.estimate import estimate_performance
from optiflow.release.report import html_page, html_table, markdown_table
from optiflow.release.rollout import ReleaseState
from optiflow.serving.prediction_log import CHALLENGER, CHAMPION

BAND_LEVEL = 0.95
_BAND_Z = float(stats.norm.ppf(0.5 + BAND_LEVEL / 2))


@dataclass(frozen=True)
class Traffic:
    """One model's share of the logged traffic."""

    version: str
    calls: int  # rows it was asked to score
    errors: int
    answered: int  # rows whose response it gave
    latency_ms: dict[str, float]  # p50 / p95 / p99 of its scoring calls
    estimated_auc: dict[str, float] | None  # label-free estimate and its band on the paired rows

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class LiveComparison:
    mode: str
    champion: Traffic
    challenger: Traffic
    paired_rows: int  # rows both models scored
    agreement: float | None  # share of paired rows given the same label
    score_distance: float | None  # Kolmogorov-Smirnov statistic between the two score distributions
    labelled_rows: int
    realised: PairedComparison | None  # challenger - champion ROC AUC on labelled paired rows

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["realised"] = None if self.realised is None else self.realised.to_dict()
        return payload


@dataclass(frozen=True)
class Verdict:
    """What the release flow does, why, and the figures it weighed."""

    action: Literal["promote", "wait", "abort", "rollback", "keep"]
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def paired_scores(log: pd.DataFrame, state: ReleaseState) -> pd.DataFrame:
    """One row per scored request row with both models' probabilities and labels, and the joined outcome."""
    mine = log[log["model_version"].isin([state.champion, state.challenger])]
    wide = mine.pivot_table(
        index=["request_id", "row"],
        columns="role",
        values=["probability", "label"],
        aggfunc="first",
    )
    wide.columns = [f"{value}_{role}" for value, role in wide.columns]
    columns = [f"{value}_{role}" for value in ("probability", "label") for role in (CHAMPION, CHALLENGER)]
    wide = wide.reindex(columns=columns)  # a role with no score yet is a column of NaN, not a missing column
    outcome = mine.groupby(["request_id", "row"])["outcome"].first()
    return wide.join(outcome).dropna(subset=[f"probability_{CHAMPION}", f"probability_{CHALLENGER}"])


def compare_live(
    log: pd.DataFrame, state: ReleaseState, gate: ChampionGateParams, draws: int = 400, seed: int = 0
) -> LiveComparison:
    """The paired comparison of the release's two versions on the rows logged since it started."""
    since = log[log["at"] >= state.started_at]
    pairs = paired_scores(since, state)
    labelled = pairs.dropna(subset=["outcome"])
    realised = None
    if len(labelled) and labelled["outcome"].nunique() == 2:
        realised = compare_auc(
            labelled["outcome"].to_numpy(int),
            labelled[f"probability_{CHAMPION}"].to_numpy(float),
            labelled[f"probability_{CHALLENGER}"].to_numpy(float),
            gate.method,
            gate.confidence,
            gate.resamples,
            seed,
        )
    champion_scores = pairs[f"probability_{CHAMPION}"].to_numpy(float)
    challenger_scores = pairs[f"probability_{CHALLENGER}"].to_numpy(float)
    return LiveComparison(
        mode=state.mode,
        champion=_traffic(since, str(state.champion), champion_scores, draws, seed),
        challenger=_traffic(since, state.challenger, challenger_scores, draws, seed),
        paired_rows=len(pairs),
        agreement=float((pairs[f"label_{CHAMPION}"] == pairs[f"label_{CHALLENGER}"]).mean()) if len(pairs) else None,
        score_distance=float(stats.ks_2samp(champion_scores, challenger_scores).statistic) if len(pairs) else None,
        labelled_rows=len(labelled),
        realised=realised,
    )


def _traffic(log: pd.DataFrame, version: str, paired: np.ndarray, draws: int, seed: int) -> Traffic:
    mine = log[log["model_version"] == version]
    # Its answers' latency when it answered (canary); a shadow's off-path calls gather several micro-batches, so
    # their times are per gathered call, not comparable with a response's.
    answers = mine[mine["answered"].astype(bool)]
    latency = (answers if len(answers) else mine)["latency_ms"].to_numpy(float)
    percentiles = (
        {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)} if len(latency) else {"p50": math.nan}
    )
    return Traffic(
        version=version,
        calls=len(mine),
        errors=int(mine["error"].notna().sum()),
        answered=int(mine["answered"].sum()),
        latency_ms=percentiles,
        estimated_auc=_estimated_auc(paired, draws, seed),
    )


def _estimated_auc(probabilities: np.ndarray, draws: int, seed: int) -> dict[str, float] | None:
    if len(probabilities) < 2:
        return None
    band = estimate_performance(probabilities, 0.5, level=BAND_LEVEL, draws=draws, seed=seed).metrics["roc_auc"]
    return {"estimate": band.estimate, "low": band.low, "high": band.high}


def _band_se(band: dict[str, float]) -> float:
    """The standard error a band of level BAND_LEVEL implies."""
    return (band["high"] - band["low"]) / (2 * _BAND_Z)


def estimated_drop(new: dict[str, float] | None, reference: dict[str, float] | None) -> dict[str, float] | None:
    """new - reference estimated ROC AUC and the standard error of that difference (bands taken as independent,
    which overstates it for paired rows: an abort then needs more evidence, never less)."""
    if new is None or reference is None:
        return None
    return {
        "drop": new["estimate"] - reference["estimate"],
        "standard_error": math.hypot(_band_se(new), _band_se(reference)),
    }


def _beyond(drop: dict[str, float] | None, limit: float, noise_z: float) -> bool:
    """A drop larger than ``limit`` and than ``noise_z`` standard errors."""
    return drop is not None and drop["drop"] < -limit and -drop["drop"] > noise_z * drop["standard_error"]


def decide_release(
    comparison: LiveComparison, release: ReleaseParams, gate: ChampionGateParams, noise_z: float, hours: float
) -> Verdict:
    """Abort on errors or a drop beyond its noise (estimated or realised); promote once the realised paired test on
    at least ``min_labelled_rows`` live rows shows the challenger not worse than gates.champion.margin (its
    superiority was shown on the holdout before its release); otherwise wait, saying for what."""
    challenger, realised = comparison.challenger, comparison.realised
    estimated = estimated_drop(challenger.estimated_auc, comparison.champion.estimated_auc)
    figures = {
        "hours": hours,
        "paired_rows": comparison.paired_rows,
        "labelled_rows": comparison.labelled_rows,
        "challenger_error_rate": challenger.error_rate,
        "estimated": estimated,
        "realised": None if realised is None else realised.to_dict(),
    }
    if comparison.mode == "direct":
        return Verdict("promote", "no live traffic in a direct release: the offline gates decided", figures)
    problems = []
    if challenger.calls >= min(release.min_rows, 100) and challenger.error_rate > release.max_error_rate:
        problems.append(
            f"challenger error rate {challenger.error_rate:.2%} > {release.max_error_rate:.2%} "
            f"({challenger.errors} of {challenger.calls} calls)"
        )
    if _beyond(estimated, release.max_auc_drop, noise_z):
        problems.append(
            f"estimated ROC AUC drop {estimated['drop']:+.4f} beyond -{release.max_auc_drop} and "
            f"{noise_z} standard errors ({estimated['standard_error']:.4f})"
        )
    labelled_enough = realised is not None and comparison.labelled_rows >= release.min_labelled_rows
    if labelled_enough and realised.high < 0 and realised.estimate < -release.max_auc_drop:
        problems.append(f"realised: {realised.describe()}: worse by more than {release.max_auc_drop}")
    if problems:
        return Verdict("abort", "; ".join(problems), figures)
    if comparison.paired_rows < release.min_rows:
        return Verdict("wait", f"{comparison.paired_rows} of release.min_rows = {release.min_rows} rows", figures)
    if hours < release.min_hours:
        return Verdict("wait", f"running {hours:.1f} h of release.min_hours = {release.min_hours} h", figures)
    if not labelled_enough:
        return Verdict(
            "wait",
            f"{comparison.labelled_rows} labelled rows of release.min_labelled_rows = {release.min_labelled_rows} "
            "(promotion needs the realised paired test)",
            figures,
        )
    bar = -gate.margin  # non-inferiority: the holdout gate already showed the challenger better offline
    if realised.low > bar:
        return Verdict("promote", f"realised: {realised.describe()}: lower bound above {bar:+.4f}", figures)
    return Verdict("wait", f"realised: {realised.describe()}: lower bound not above {bar:+.4f} yet", figures)


def realised_auc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float] | None:
    """ROC AUC and its Hanley-McNeil standard error, or None without both classes."""
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if positives == 0 or negatives == 0:
        return None
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(labels, scores))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return {"estimate": auc, "standard_error": math.sqrt(max(variance, 0.0))}


def watch_champion(
    before: pd.DataFrame, after: pd.DataFrame, release: ReleaseParams, noise_z: float, draws: int = 400, seed: int = 0
) -> Verdict:
    """A champion promoted by a release, against itself during the release (``before``: its logged scores as the
    challenger; ``after``: since promotion): roll back on errors, or an estimated or realised ROC AUC drop beyond
    ``release.max_auc_drop`` and its noise."""
    scored = after.dropna(subset=["probability"])
    errors = int(after["error"].notna().sum())
    error_rate = errors / len(after) if len(after) else 0.0
    estimated = estimated_drop(
        _estimated_auc(scored["probability"].to_numpy(float), draws, seed),
        _estimated_auc(before["probability"].dropna().to_numpy(float), draws, seed),
    )
    realised = None
    old = before.dropna(subset=["probability", "outcome"])
    new = scored.dropna(subset=["outcome"])
    if min(len(old), len(new)) >= release.min_labelled_rows:
        a = realised_auc(new["outcome"].to_numpy(int), new["probability"].to_numpy(float))
        b = realised_auc(old["outcome"].to_numpy(int), old["probability"].to_numpy(float))
        if a is not None and b is not None:
            realised = {
                "drop": a["estimate"] - b["estimate"],
                "standard_error": math.hypot(a["standard_error"], b["standard_error"]),
            }
    figures = {
        "rows_after": len(after),
        "rows_before": len(before),
        "error_rate": error_rate,
        "estimated": estimated,
        "realised": realised,
    }
    problems = []
    if len(after) >= min(release.min_rows, 100) and error_rate > release.max_error_rate:
        problems.append(f"error rate {error_rate:.2%} > {release.max_error_rate:.2%} ({errors} of {len(after)} calls)")
    for source, drop in (("estimated", estimated), ("realised", realised)):
        if _beyond(drop, release.max_auc_drop, noise_z):
            problems.append(
                f"{source} ROC AUC drop {drop['drop']:+.4f} since promotion beyond -{release.max_auc_drop} and "
                f"{noise_z} standard errors ({drop['standard_error']:.4f})"
            )
    if problems:
        return Verdict("rollback", "; ".join(problems), figures)
    if len(after) < release.min_rows:
        return Verdict("keep", f"{len(after)} of release.min_rows = {release.min_rows} rows since promotion", figures)
    return Verdict("keep", "no drop beyond its noise since promotion", figures)


def comparison_rows(comparison: LiveComparison) -> list[dict[str, Any]]:
    """One row per model: what `optiflow release status` prints and the page shows."""
    rows = []
    for role, traffic in ((CHAMPION, comparison.champion), (CHALLENGER, comparison.challenger)):
        band = traffic.estimated_auc or {}
        rows.append(
            {
                "role": role,
                "version": f"v{traffic.version}",
                "calls": traffic.calls,
                "answered": traffic.answered,
                "error rate": traffic.error_rate,
                "est. ROC AUC": band.get("estimate"),
                "95% band": f"[{band['low']:.3f}, {band['high']:.3f}]" if band else None,
                **{f"{name} ms": value for name, value in traffic.latency_ms.items()},
            }
        )
    return rows


def summary_lines(comparison: LiveComparison, verdict: Verdict) -> list[str]:
    realised = comparison.realised.describe() if comparison.realised is not None else "no labelled paired rows yet"
    return [
        f"paired rows {comparison.paired_rows}, agreement "
        f"{'-' if comparison.agreement is None else f'{comparison.agreement:.1%}'}, score distance (KS) "
        f"{'-' if comparison.score_distance is None else f'{comparison.score_distance:.3f}'}",
        f"labelled rows {comparison.labelled_rows}: {realised}",
        f"verdict: {verdict.action} ({verdict.reason})",
    ]


def status_markdown(state: ReleaseState, comparison: LiveComparison, verdict: Verdict) -> str:
    head = f"# Release of {state.model_name} v{state.challenger} ({state.mode}) against v{state.champion}\n\n"
    return head + markdown_table(comparison_rows(comparison)) + "\n\n" + "\n\n".join(summary_lines(comparison, verdict))


def status_html(state: ReleaseState, comparison: LiveComparison, verdict: Verdict) -> str:
    import html

    title = f"Release of {state.model_name} v{state.challenger}"
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(comparison, verdict))
    body = (
        f"<h1>{html.escape(title)}</h1><p>{state.mode} release against champion v{state.champion}"
        f"{f', canary share {state.share:.0%}' if state.mode == 'canary' else ''}</p>"
        f"{html_table(comparison_rows(comparison))}{lines}"
    )
    return html_page(title, body)
