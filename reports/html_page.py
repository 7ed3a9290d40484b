"""The self-contained HTML report (``OUT/index.html``): data assembly and the one page.

The page (html_page.html beside this module: CSS, JavaScript and the SVG drawing inline, no
network request) gets one JSON document embedded in a ``<script type="application/json">``
element and renders every view from it on demand:

- the leaderboard: the header and rows of leaderboard.csv, as strings, exactly;
- the curves: the bands of ``curves.task_curves`` (mean, interval, per t), drawn as inline SVG;
- the problems: one entry per model x task x doc. Per condition its output; for injection and
  noise runs the generated tokens before and after the injected segment and, per post-injection
  token, the series of the metric package: a_t and the KL divergences from ``curves.run_series``
  (``adaptation_scores``, ``non_sink_masses``), log P under the old / new context from the trace,
  the adaptation point from ``doc_metrics`` (the event of adaptation_point_share@N) and the first
  alarm of the calibrated detector (``aggregations.detection_outcome`` over the run's docs, the
  calibration lm-eval's detection keys use). Answers are the task's own matcher's (named in the
  results JSON), run on each condition's text with the doc from ``--log_samples``.

Floats are rounded to FLOAT_DIGITS significant digits (what a colour or a tooltip can show);
a run without traces gives its logged samples (output, answer, per-doc metric values) only.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import json
import math
from importlib import resources
from pathlib import Path

from kvinject.metrics import AdaptationSettings, doc_metrics
from kvinject.metrics.aggregations import detection_outcome
from kvinject.metrics.keys import carrier_keys

from .curves import KINDS, is_control, run_series
from .plotting import PANELS

TEMPLATE = "html_page.html"
DATA_MARK = "/*KVINJECT_DATA*/"
FLOAT_DIGITS = 4
# Diverging scale of a_t: 0 = follows the old problem, 0.5 = undecided, 1 = follows the new one.
A_T_SCALE = ((0.0, "#b2182b"), (0.25, "#ef8a62"), (0.5, "#f7f7f7"), (0.75, "#67a9cf"), (1.0, "#2166ac"))
# Token texts are decoded with this many preceding ids as context, so that a piece keeps the
# leading space or the bytes of a character a tokenizer splits over several ids.
DECODE_CONTEXT = 4
# Per-token series of a run in the page (short names keep the embedded data small).
TOKEN_SERIES = {"a": "adaptation_score", "klo": "kl_run_old", "kln": "kl_run_new",
                "att": "attention_injected"}
TRACE_SERIES = {"lpo": "logp_old", "lpn": "logp_new"}


def _round(value):
    """FLOAT_DIGITS significant digits; None for a missing or non-finite value (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return value
    value = float(value)
    return float(f"{value:.{FLOAT_DIGITS}g}") if math.isfinite(value) else None


def _rounded(values) -> list:
    return [_round(value) for value in values]


# ---- leaderboard and curves --------------------------------------------------------------------

def leaderboard_data(board) -> dict:
    """leaderboard.csv's header and rows (strings, exactly as in the file) and the table notes."""
    header, *rows = csv.reader(io.StringIO(board.csv()))
    return {"header": header, "rows": rows, "columns": list(board.columns), "sort_by": board.sort_by,
            "digits": board.digits, "notes": list(board.notes)}


def curves_data(curves: dict, settings: AdaptationSettings, confidence_level: float) -> dict:
    """One task's curves: per (model, point, kind) line, per series [mean, low, high] by t = 1.."""
    lines = [{"model": key.model, "point": key.point, "kind": key.kind,
              "series": {name: [_rounded(band.mean), _rounded(band.low), _rounded(band.high)]
                         for name, band in bands.items()}}
             for key, bands in sorted(curves.items(), key=lambda item: (item[0].model, item[0].point,
                                                                         KINDS.index(item[0].kind)))]
    return {"lines": lines, "threshold": settings.adapted_threshold, "confidence_level": confidence_level}


# ---- answers ---------------------------------------------------------------------------------

def answer_matcher(run, task: str):
    """The task's matcher, as its results JSON names it (metadata.answer_matcher), or None."""
    path = ((run.results.get("configs", {}).get(task, {}).get("metadata") or {}).get("answer_matcher"))
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _answer(matcher, text: str, doc: dict | None) -> dict | None:
    """{"answer", "new", "old"} of the matcher (the task scored the condition with it)."""
    if matcher is None or doc is None:
        return None
    found = matcher(text, doc)
    return {"answer": found["answer"], "new": bool(found["new"]), "old": bool(found["old"])}


# ---- token texts -----------------------------------------------------------------------------

def load_tokenizer(run):
    """(tokenizer, None) for the run's model when it is available offline, else (None, why).

    Only an offline alias or an existing local folder is tried (never the Hub); the tokenizer
    gives the token texts of the page, nothing else.
    """
    from kvinject.model_adapters.offline_models import OFFLINE_MODELS

    pretrained = str(run.model_args.get("pretrained", ""))
    if pretrained not in OFFLINE_MODELS and not Path(pretrained).expanduser().is_dir():
        return None, f"the tokenizer of {pretrained or 'the model'} is not available offline"
    from transformers import AutoTokenizer

    from kvinject.model_adapters.loading import weights_location
    from kvinject.model_adapters.model_args import parse_model_args

    try:
        location, gguf_file = weights_location(parse_model_args(run.model_args))
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False, **extra), None
    except (OSError, ValueError) as error:   # reported by the command; the page still shows token numbers
        return None, f"cannot load the tokenizer of {pretrained}: {error}"


def token_pieces(tokenizer, ids: list[int], before: list[int] = ()) -> list[str] | None:
    """The text of each id (decoded after up to DECODE_CONTEXT preceding ids), or None without
    a tokenizer."""
    if tokenizer is None:
        return None
    context = list(before) + list(ids)
    offset = len(context) - len(ids)
    pieces = []
    for index in range(offset, len(context)):
        start = max(0, index - DECODE_CONTEXT)
        head = tokenizer.decode(context[start:index])
        whole = tokenizer.decode(context[start:index + 1])
        pieces.append(whole[len(head):] if whole.startswith(head) else tokenizer.decode([context[index]]))
    return pieces


# ---- problems --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every problem of one run x task shares."""

    model: str
    task: str
    settings: AdaptationSettings
    matcher: object = None
    tokenizer: object = None
    tokens_note: str | None = None


def _full(settings: AdaptationSettings) -> AdaptationSettings:
    return dataclasses.replace(settings, report="full")


def first_alarms(traces: list[dict], values: list[dict], settings: AdaptationSettings) -> list[dict]:
    """{N: first alarm t or None} of each doc's injection run: the calibrated detector of the
    detection keys, calibrated on the noise runs of every doc of the run injected at N."""
    alarms = [{} for _ in traces]
    points = sorted({point for trace in traces for point in trace["settings"]["injection_points"]})
    for point in points:
        key = carrier_keys("detection_rate", point, _full(settings))[0]
        carriers = [index for index, doc in enumerate(values) if key in doc]
        if not carriers:
            continue
        outcome = detection_outcome([values[index][key] for index in carriers], settings)
        for index, alarm, time in zip(carriers, outcome.alarm, outcome.time):
            alarms[index][point] = int(time) if alarm == 1 else None
    return alarms


def _event_time(event: dict | None) -> int | None:
    return int(event["time"]) if event and event["status"] == "event" else None


def _adaptation_points(values: dict, point: int) -> dict:
    """The adaptation point t (a_t > threshold with the minimum KL gap, metrics.per_doc) of the
    injection and the noise run, None where there is none."""
    changed = values.get(f"adaptation_point_share@{point}")
    if changed is not None:
        return {"injection": _event_time(changed["run"]), "noise": _event_time(changed["noise"])}
    control = values.get(f"adaptation_point_vs_controls_pvalue@{point}")
    return {"injection": _event_time(control["run"]) if control else None, "noise": None}


def _token_series(entry: dict, settings: AdaptationSettings) -> dict:
    derived = run_series(entry, settings)
    series = {short: _rounded(derived[name]) for short, name in TOKEN_SERIES.items() if name in derived}
    series.update({short: _rounded(entry["series"][name]) for short, name in TRACE_SERIES.items()})
    return series


def _condition(name: str, entry: dict, doc: dict | None, context: RunContext, marks: dict) -> dict:
    item = {"name": name, "text": entry["text"], "stop": entry["stop_reason"],
            "answer": _answer(context.matcher, entry["text"], doc)}
    if "injection_point" not in entry:
        item["tokens"] = token_pieces(context.tokenizer, entry["ids"])
        return item
    item["point"] = entry["injection_point"]
    if not entry["injected"]:
        item["not_injected"] = entry["not_injected_reason"]
        item["tokens"] = token_pieces(context.tokenizer, entry["ids"])
        return item
    item.update(pre=token_pieces(context.tokenizer, entry["pre_ids"]), injected=entry["injected_text"],
                post=token_pieces(context.tokenizer, entry["post_ids"], entry["pre_ids"]),
                n_post=len(entry["post_ids"]), series=_token_series(entry, context.settings), **marks)
    return item


def traced_problem(trace: dict, values: dict, alarms: dict, index: int, doc: dict | None,
                   report: dict | None, context: RunContext) -> dict:
    """One problem of a traced run: prompts, golds and every condition token by token."""
    points = trace["settings"]["injection_points"]
    conditions = []
    for name, entry in trace["conditions"].items():
        marks = {}
        if "injection_point" in entry:
            kind, point = name.split("@")[0], entry["injection_point"]
            marks = {"adapt": _adaptation_points(values, point)[kind],
                     "alarm": alarms.get(point) if kind == "injection" else None}
        conditions.append(_condition(name, entry, doc, context, marks))
    problem = _problem_head(trace["doc_id"], index, doc, context, control=is_control(trace))
    problem.update(
        traced=True, points=points,
        original=trace["prompts"]["original"]["text"], alternative=trace["prompts"]["alternative"]["text"],
        adapted={point: _adaptation_points(values, point)["injection"] is not None
                 for point in points if f"injection@{point}" in trace["conditions"]
                 and trace["conditions"][f"injection@{point}"]["injected"]},
        conditions=conditions,
        assessment={name.split("_")[-1]: entry["summary"]["assessment"]
                    for name, entry in (report or {}).get("token_analysis", {}).items()})
    problem["correct"] = {point: _correct(conditions, point) for point in points}
    return problem


def _correct(conditions: list[dict], point: int) -> bool | None:
    """The injection run's answer matches the alternative (new) gold, as injection_accuracy@N
    counts it; None without an answer or when the run was not injected at N."""
    for item in conditions:
        if item["name"] == f"injection@{point}" and item["answer"] is not None and "series" in item:
            return item["answer"]["new"]
    return None


def _problem_head(doc_id: str, index: int, doc: dict | None, context: RunContext, control: bool) -> dict:
    doc = doc or {}
    return {"model": context.model, "task": context.task, "doc_id": doc_id, "index": index,
            "variation": doc.get("variation_type") or ("identical" if control else None),
            "control": control,
            "question_old": doc.get("original_question"), "question_new": doc.get("alternative_question"),
            "gold_old": doc.get("original_answer"), "gold_new": doc.get("alternative_answer"),
            "tokens_note": context.tokens_note}


def run_problems(run, task: str, label: str, settings: AdaptationSettings, reports: list[dict],
                 tokenizer=None, tokens_note: str | None = None) -> list[dict]:
    """Every problem of a traced run x task (reports: per_problem.problem_reports of the run)."""
    context = RunContext(label, task, settings, answer_matcher(run, task), tokenizer, tokens_note)
    traces = run.traces(task)
    docs = {str(sample["doc"].get("id")): (sample["doc_id"], sample["doc"]) for sample in run.samples(task)
            if isinstance(sample.get("doc"), dict)}
    values = [doc_metrics(trace, {}, _full(settings)) for trace in traces]
    alarms = first_alarms(traces, values, settings)
    by_doc = {report["doc_id"]: report for report in reports}
    problems = []
    for order, (trace, doc_values, doc_alarms) in enumerate(zip(traces, values, alarms)):
        index, doc = docs.get(trace["doc_id"], (order, None))
        problems.append(traced_problem(trace, doc_values, doc_alarms, index, doc, by_doc.get(trace["doc_id"]),
                                       context))
    return problems


def sample_problems(run, task: str, label: str) -> list[dict]:
    """The problems of a run without traces, from its logged samples: the output lm-eval logged,
    the matcher's answer and the per-doc metric values (scalars) of the sample."""
    context = RunContext(label, task, AdaptationSettings(), answer_matcher(run, task))
    problems = []
    for sample in run.samples(task):
        doc = sample.get("doc") if isinstance(sample.get("doc"), dict) else {}
        responses = sample.get("filtered_resps") or sample.get("resps") or []
        text = _first_text(responses)
        problem = _problem_head(str(doc.get("id", sample.get("doc_id"))), sample.get("doc_id"), doc, context,
                                control=doc.get("original_question") == doc.get("alternative_question")
                                and doc.get("original_question") is not None)
        metrics = {key: _round(value) for key, value in sample.items()
                   if "@" in key and isinstance(value, (int, float)) and not isinstance(value, bool)}
        points = sorted({int(key.split("@")[1]) for key in metrics if key.split("@")[1].isdigit()})
        problem.update(traced=False, points=points, original=doc.get("original_question"),
                       alternative=doc.get("alternative_question"), metrics=metrics,
                       conditions=[{"name": "baseline", "text": text, "answer": _answer(context.matcher, text, doc),
                                    "tokens": None}],
                       adapted={}, correct={point: _metric_flag(metrics, f"injection_accuracy@{point}")
                                            for point in points})
        problems.append(problem)
    return problems


def _first_text(responses) -> str:
    while isinstance(responses, list) and responses:
        responses = responses[0]
    return responses if isinstance(responses, str) else ""


def _metric_flag(metrics: dict, key: str) -> bool | None:
    return None if metrics.get(key) is None else metrics[key] == 1


# ---- the page --------------------------------------------------------------------------------

def page_data(title: str, leaderboard: dict, curves: dict, problems: list[dict], notes: list[str]) -> dict:
    """The JSON the page embeds: title, leaderboard, curves, problems, notes, the panels and the colour scale."""
    return {"title": title, "leaderboard": leaderboard, "curves": curves, "panels": PANELS,
            "scale": [list(stop) for stop in A_T_SCALE], "problems": problems, "notes": notes}


def embed_json(data: dict) -> str:
    """JSON for a <script type="application/json"> element: no "</" (it would end the element)
    and no "://" (no text in the file reads as a link), both written with JSON's own \\/ escape."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("://", ":\\/\\/").replace("<!--", "<\\u0021--")


def render_page(data: dict) -> str:
    """The HTML page with ``data`` embedded in its template; ValueError unless it has exactly one DATA_MARK."""
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    if template.count(DATA_MARK) != 1:
        raise ValueError(f"{TEMPLATE}: expected exactly one {DATA_MARK}")
    return template.replace(DATA_MARK, embed_json(data))


def read_page_data(html: str) -> dict:
    """The data embedded in a page written by render_page (tests and tools read it back)."""
    start = html.index('<script id="kvinject-data" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])
