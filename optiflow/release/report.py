"""The model card (markdown, set as the version description) and the one self-contained HTML run report.

Both are rendered from the files the stages wrote, so they show exactly what was evaluated and decided; images are
inlined as base64 so the report is one file that opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier", "ece", "threshold")
SECTIONS = (
    "Decisions",
    "Validation",
    "Metrics",
    "Calibration",
    "Slices",
    "Fairness",
    "Explainability",
    "Compression",
    "Gate decisions",
)


@dataclass(frozen=True, eq=False)
class RunFacts:
    """Everything one pipeline run produced that a person reads: stage outputs plus the promotion decision."""

    model_name: str
    version: str
    run_id: str
    target: str
    validation: Mapping[str, Any]  # reports/validation/report.json
    metrics: Mapping[str, Any]  # reports/metrics.json
    slices: pd.DataFrame  # reports/evaluation/slices.csv
    fairness: Mapping[str, Any]  # reports/fairness.json
    explain: Mapping[str, Any]  # reports/explain/summary.json
    gates: Mapping[str, Any]  # GateReport.to_dict()
    champion_version: str | None
    lineage: Mapping[str, str]
    images: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)  # section -> caption -> PNG
    compression: Mapping[str, Any] = field(default_factory=dict)  # reports/compression.json
    comparison: str = ""  # the paired test against the champion on the holdout, or why there was none
    held: bool = False  # a release policy holds a passing version as the challenger instead of promoting it

    @property
    def outcome(self) -> str:
        return ("challenger" if self.held else "promoted") if self.gates["passed"] else "rejected"


def model_card(facts: RunFacts) -> str:
    """Markdown model card: what the model is for, what it was trained and judged on, and why it was (not) promoted."""
    metrics, family = facts.metrics, facts.metrics["selected"]
    validation = facts.validation
    lines = [
        f"# Model card: {facts.model_name} v{facts.version}",
        "",
        "## Intended use",
        f"Binary classifier ({family}) scoring the probability that `{facts.target}` is positive,"
        f" for batch scoring and ranking; the decision threshold {metrics['threshold']:.3f} was chosen on the"
        f" validation split by `{metrics.get('threshold_policy', 'fixed')}`. Not for decisions about individuals"
        " without human review.",
        "",
        "## Data",
        f"Source `{facts.lineage['data.source']}` (sha256 `{facts.lineage['data.sha256'][:12]}`),"
        f" {validation['rows']} rows; validation {'passed' if validation['success'] else 'failed'}"
        f" ({validation['evaluated']} expectations). Split md5: train `{facts.lineage['data.train.md5']}`,"
        f" valid `{facts.lineage['data.valid.md5']}`, test `{facts.lineage['data.test.md5']}`.",
        f"Git commit `{facts.lineage['git.commit']}` (dirty: {facts.lineage['git.dirty']}),"
        f" params sha256 `{facts.lineage['params.sha256'][:12]}`.",
        "",
        "## Decisions",
        "Every choice was made on the validation split (or by cross-validation inside train); the test split was"
        " scored once, for this card and the gates.",
        "",
        markdown_table(decision_rows(facts)),
        "",
        f"## Metrics (test split, {metrics['test_rows']} rows)",
        markdown_table([{"model": family, **{k: metrics["test"].get(k) for k in _METRICS}}]),
        "",
        f"Candidates on the validation split ({metrics.get('valid_rows', '?')} rows), which chose the model:",
        "",
        markdown_table(_candidate_rows(metrics)),
        "",
        "## Slices",
        markdown_table(facts.slices.query("family == @family").drop(columns="family").to_dict(orient="records"))
        if not facts.slices.empty
        else "No slices configured.",
        "",
        "## Fairness",
        *_fairness_lines(facts.fairness),
        "",
        "## Top features",
        *[
            f"{item['rank']}. `{item['column']}` (mean |SHAP| {item['mean_abs_shap']:.4g})"
            for item in facts.explain.get("top_columns", [])
        ],
        *[f"- Note: {note}" for note in facts.explain.get("disagreements", [])],
        "",
        "## Compression",
        *_compression_lines(facts.compression),
        "",
        "## Limitations",
        "- Metrics come from one held-out split of one dataset; they hold only for data like it (see the drift"
        " monitor).",
        "- Group metrics on small groups are noisy; groups under the fairness `min_group_size` are not gated.",
        "- A fairness-mitigated candidate (ThresholdOptimizer) is reported, never registered: it cannot be saved"
        " with skops.",
        "",
        "## Gate decisions",
        f"**{facts.outcome}** (compared with champion {_version(facts.champion_version)}): {facts.gates['message']}",
        "",
        f"Champion comparison: {facts.comparison or 'not recorded'}.",
        "",
        markdown_table(_gate_rows(facts.gates)),
    ]
    return "\n".join(lines) + "\n"


def decision_rows(facts: RunFacts) -> list[dict[str, Any]]:
    """Each automatic decision of the run, what it chose, and the data (and rows) it rested on."""
    metrics = facts.metrics
    valid_rows = metrics.get("valid_rows")
    rows: list[dict[str, Any]] = [
        {
            "decision": "hyperparameters",
            "choice": "best trial per family",
            "data": "train",
            "rows": "-",
            "evidence": "Optuna, k-fold cross-validation inside the train split (tune stage)",
        }
    ]
    decisions = dict(metrics.get("decisions", {}))
    rows += [{"decision": name, **decisions.pop(name)} for name in ("model",) if name in decisions]
    if facts.compression:
        rows.append(
            {
                "decision": "compressed variant",
                "choice": facts.compression.get("chosen") or "none",
                "data": "valid",
                "rows": valid_rows,
                "evidence": facts.compression.get("message", ""),
            }
        )
    rows += [{"decision": name, **decisions.pop(name)} for name in ("calibration", "threshold") if name in decisions]
    decided = facts.fairness.get("mitigation_decided_on")
    if decided:
        mitigation = facts.fairness.get("mitigation")
        rows.append(
            {
                "decision": "fairness mitigation",
                "choice": ", ".join(mitigation["columns"]) if mitigation else "none",
                "data": decided["data"],
                "rows": decided["rows"],
                "evidence": decided["gates"],
            }
        )
    rows += [{"decision": name, **row} for name, row in decisions.items()]
    rows.append(
        {
            "decision": "promotion",
            "choice": facts.outcome,
            "data": "holdout" if facts.champion_version else "-",
            "rows": "-",
            "evidence": facts.comparison or "not recorded",
        }
    )
    return rows


def _candidate_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"candidate": name, "selected": name == metrics["selected"], **{k: values.get(k) for k in _METRICS}}
        for name, values in metrics["candidates"].items()
    ]


def card_html(markdown_text: str, title: str) -> str:
    """The model card as a standalone HTML page (MLflow shows HTML artifacts inline)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    return html_page(title, body)


def run_report(facts: RunFacts) -> str:
    """One self-contained HTML page per pipeline run, with a section per stage result and every figure inlined."""
    metrics, family = facts.metrics, facts.metrics["selected"]
    validation = facts.validation
    failed_checks = [check for check in validation.get("checks", []) if not check["success"]]
    parts = [
        f"<h1>Optiflow run report: {html.escape(facts.model_name)} v{html.escape(facts.version)}</h1>",
        f"<p class='verdict {facts.outcome}'>Version {html.escape(facts.version)} <b>{facts.outcome}</b>"
        f" (MLflow run <code>{html.escape(facts.run_id)}</code>, compared with champion"
        f" {html.escape(_version(facts.champion_version))}).</p>",
        "<h2 id='decisions'>Decisions</h2>",
        "<p>What each automatic decision chose and the data it rested on: every choice on the validation split (or"
        " cross-validation inside train), the test split scored once for the report and the gates, the champion met"
        " on holdout rows neither model trained on.</p>",
        html_table(decision_rows(facts)),
        "<h2 id='validation'>Validation</h2>",
        f"<p>{html.escape(str(validation['source']))}: {validation['rows']} rows,"
        f" {validation['evaluated']} expectations, {validation['failed']} failed"
        f" ({'passed' if validation['success'] else 'failed'}).</p>",
        html_table(failed_checks) if failed_checks else "",
        "<h2 id='metrics'>Metrics</h2>",
        f"<p>The final model, <b>{html.escape(family)}</b>, scored once on the test split ({metrics['test_rows']}"
        f" rows) at its threshold {metrics['threshold']:.3f} (chosen on the validation split by"
        f" {html.escape(str(metrics.get('threshold_policy', 'fixed')))}):</p>",
        html_table([{"model": family, **{k: metrics["test"].get(k) for k in _METRICS}}]),
        f"<p>Candidates on the validation split ({metrics.get('valid_rows', '?')} rows), where"
        f" {html.escape(metrics['primary_metric'])} chose the model:</p>",
        html_table(_candidate_rows(metrics)),
        _images(facts.images.get("Metrics", {})),
        "<h2 id='calibration'>Calibration</h2>",
        *_calibration_html(metrics),
        _images(facts.images.get("Calibration", {})),
        "<h2 id='slices'>Slices</h2>",
        html_table(facts.slices.to_dict(orient="records")) if not facts.slices.empty else "<p>No slices.</p>",
        "<h2 id='fairness'>Fairness</h2>",
        *_fairness_html(facts.fairness),
        "<h2 id='explainability'>Explainability</h2>",
        f"<p>{html.escape(str(facts.explain.get('explainer')))} SHAP in"
        f" {html.escape(str(facts.explain.get('output_space')))} space on {facts.explain.get('rows_explained')} test"
        " rows.</p>",
        html_table(facts.explain.get("top_columns", [])),
        "".join(f"<p class='note'>{html.escape(note)}</p>" for note in facts.explain.get("disagreements", [])),
        _images(facts.images.get("Explainability", {})),
        "<h2 id='compression'>Compression</h2>",
        f"<p>{html.escape(str(facts.compression.get('message', 'No compression report.')))}</p>",
        html_table(_compression_rows(facts.compression)),
        _images(facts.images.get("Compression", {})),
        "<h2 id='gate-decisions'>Gate decisions</h2>",
        f"<p>Champion comparison: {html.escape(facts.comparison or 'not recorded')}.</p>",
        f"<pre>{html.escape(facts.gates['message'])}</pre>",
        html_table(_gate_rows(facts.gates)),
        "<h2 id='lineage'>Lineage</h2>",
        html_table([{"tag": key, "value": value} for key, value in sorted(facts.lineage.items())]),
    ]
    return html_page(f"Optiflow run report: {facts.model_name} v{facts.version}", "\n".join(p for p in parts if p))


def _calibration_html(metrics: Mapping[str, Any]) -> list[str]:
    calibration, test = metrics.get("calibration"), metrics["test"]
    if not calibration:
        return ["<p>No calibration recorded.</p>"]
    brier = ", ".join(f"{method} {value:.5f}" for method, value in calibration["brier"].items())
    return [
        f"<p><b>{html.escape(calibration['method'])}</b> calibration, fitted on the validation split"
        f" ({calibration['rows']} rows) with the model frozen; chosen by {html.escape(calibration['chosen_by'])}"
        f" ({brier}). Expected calibration error on the test split: {test.get('ece_uncalibrated', float('nan')):.4f}"
        f" before, {test['ece']:.4f} after.</p>"
    ]


def _compression_lines(compression: Mapping[str, Any]) -> list[str]:
    if not compression:
        return ["No compression report."]
    rows = _compression_rows(compression)
    return [str(compression["message"]), *(["", markdown_table(rows)] if rows else [])]


def _compression_rows(compression: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant of reports/compression.json: size, parameters, latency at the largest batch, AUC, verdict."""
    judgements = compression.get("judgements", {})
    rows = []
    for name, row in compression.get("variants", {}).items():
        batch = max(row["latency_ms"], key=int)
        verdict = judgements.get(name)
        rows.append(
            {
                "variant": name,
                "bytes": row["bytes"],
                "params": row["params"],
                "non-zero": row["nonzero_params"],
                f"p50 ms (batch {batch})": row["latency_ms"][batch]["p50"],
                "test roc_auc": row["test"]["roc_auc"],
                "test flips": row["test"]["flips"],
                "verdict": "baseline"
                if verdict is None
                else ("chosen" if name == compression.get("chosen") else "passes")
                if verdict["passed"]
                else "; ".join(verdict["reasons"]),
            }
        )
    return rows


def _fairness_lines(fairness: Mapping[str, Any]) -> list[str]:
    if not fairness.get("sensitive_features"):
        return [fairness.get("note", "No sensitive features declared.")]
    lines = [f"Threshold {fairness['threshold']:.3f}; gates: {fairness['message']}", ""]
    lines += [f"- `{column}` binned at {edges}" for column, edges in fairness.get("bins", {}).items()]
    for name, feature in fairness["report"]["features"].items():
        lines.append(
            f"- `{name}`: demographic parity difference {_fmt(feature['demographic_parity_difference'])},"
            f" ratio {_fmt(feature['demographic_parity_ratio'])},"
            f" equalized odds difference {_fmt(feature['equalized_odds_difference'])}"
        )
    mitigation = fairness.get("mitigation")
    if mitigation and not mitigation.get("fitted", True):
        lines += ["", f"Mitigation on {mitigation['columns']}: {mitigation['note']}."]
    elif mitigation:
        lines += [
            "",
            f"Mitigation ({mitigation['model']}, {mitigation['constraint']} on {mitigation['columns']}):"
            f" accuracy cost {_fmt(mitigation['accuracy_cost'])}; gates after: {mitigation['gates']['message']}."
            f" {mitigation['note']}.",
        ]
    return lines


def _fairness_html(fairness: Mapping[str, Any]) -> list[str]:
    if not fairness.get("sensitive_features"):
        return [f"<p>{html.escape(fairness.get('note', 'No sensitive features declared.'))}</p>"]
    binned = "; ".join(f"{column} at {edges}" for column, edges in fairness.get("bins", {}).items())
    parts = [
        f"<p>Threshold {fairness['threshold']:.3f}."
        + (f" Numeric features binned: {html.escape(binned)}." if binned else "")
        + f"</p><pre>{html.escape(fairness['message'])}</pre>",
        html_table(
            [
                {
                    "feature": name,
                    "demographic_parity_difference": feature["demographic_parity_difference"],
                    "demographic_parity_ratio": feature["demographic_parity_ratio"],
                    "equalized_odds_difference": feature["equalized_odds_difference"],
                }
                for name, feature in fairness["report"]["features"].items()
            ]
        ),
        "<h3>Groups</h3>",
        html_table(
            [
                {"feature": name, "group": group, **values}
                for name, feature in fairness["report"]["features"].items()
                for group, values in feature["groups"].items()
            ]
        ),
    ]
    mitigation = fairness.get("mitigation")
    if mitigation and not mitigation.get("fitted", True):
        parts.append(
            f"<p>Mitigation on {html.escape(str(mitigation['columns']))}: {html.escape(mitigation['note'])}.</p>"
        )
    elif mitigation:
        parts += [
            f"<h3>Mitigation: {html.escape(mitigation['model'])}</h3>",
            f"<p>{html.escape(mitigation['constraint'])} on {html.escape(str(mitigation['columns']))}, fitted on the"
            f" validation split; accuracy cost {_fmt(mitigation['accuracy_cost'])}."
            f" {html.escape(mitigation['note'])}.</p>",
            html_table(mitigation["gaps"]),
            f"<pre>{html.escape(mitigation['gates']['message'])}</pre>",
        ]
    return parts


def _gate_rows(gates: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "gate": r["gate"],
            "metric": r["metric"],
            "observed": r["observed"],
            "threshold": f"{r['comparison']} {_fmt(r['threshold'])}",
            "passed": gate_verdict(r),
            "detail": r["detail"],
        }
        for r in gates["results"]
    ]


def gate_verdict(result: Mapping[str, Any]) -> str:
    """yes / NO, or "not evaluated" for a gate that had nothing to check (never shown as passed)."""
    if not result.get("evaluated", True):
        return "not evaluated" + (" (allowed)" if result["passed"] else "")
    return "yes" if result["passed"] else "NO"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (_fmt(row.get(column)).replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(column)))}</td>" for column in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _images(images: Mapping[str, Path]) -> str:
    figures = []
    for caption, path in images.items():
        if not Path(path).is_file():
            log.info("run report: figure %s not found, left out", path)
            continue
        encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        figures.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return f"<div class='figures'>{''.join(figures)}</div>" if figures else ""


def html_page(title: str, body: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}"
        ".figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}img{max-width:460px}"
        ".verdict{font-size:18px}.promoted b{color:#1a7f37}.rejected b{color:#cf222e}"
        "pre{background:#f6f8fa;padding:8px;white-space:pre-wrap}.note{color:#9a6700}"
    )
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4g}"
    return str(value)


def _version(version: str | None) -> str:
    return f"v{version}" if version else "(none)"
