"""Grade predictions ({"id", "answers": [letters]} per line) against a set's key: accuracy per question and per
item (every answer right), overall, by number of hops and by haystack length. A missing prediction counts as wrong."""

from __future__ import annotations

import json
from collections import defaultdict

from pipeline.io import storage
from schemas import niah as niah_schema
from schemas.errors import UsageError


class PredictionsError(UsageError, ValueError):
    """Predictions that cannot be graded (bad JSON, wrong shape, an id repeated or not in the set)."""


def _jsonl(uri: str) -> list[tuple[int, object]]:
    rows = []
    for n, line in enumerate(storage.read_bytes(uri).decode("utf-8-sig").splitlines(), 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise PredictionsError(f"{uri} line {n}: not valid JSON ({e})")
    return rows


def read_key(out: str) -> list[dict]:
    return [row for _, row in _jsonl(storage.join(out, niah_schema.ANSWERS_JSONL))]


def read_predictions(uri: str, key_ids: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for n, row in _jsonl(uri):
        where = f"{uri} line {n}"
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("answers"), list):
            raise PredictionsError(f'{where}: expected {{"id": "<item id>", "answers": ["A", "C"]}}')
        if row["id"] not in key_ids:
            raise PredictionsError(f"{where}: id {row['id']!r} is not an item of this set")
        if row["id"] in found:
            raise PredictionsError(f"{where}: id {row['id']!r} appears twice")
        found[row["id"]] = [str(a).strip().upper() for a in row["answers"]]
    return found


def _empty() -> dict:
    return {"items": 0, "predicted": 0, "questions": 0, "questions_right": 0, "items_right": 0,
            "by_question": defaultdict(lambda: [0, 0])}


def score(key: list[dict], predictions: dict[str, list[str]]) -> dict:
    groups: dict[tuple[str, object], dict] = defaultdict(_empty)
    for row in key:
        predicted = predictions.get(row["id"])
        right = [predicted is not None and i < len(predicted) and predicted[i] == a
                 for i, a in enumerate(row["answers"])]
        kinds = row.get("question_kinds") or [f"q{i + 1}" for i in range(len(right))]
        for group in (("all", "all"), ("hops", row["hops"]), ("haystack_frames", row["num_frames"])):
            g = groups[group]
            g["items"] += 1
            g["predicted"] += predicted is not None
            g["questions"] += len(right)
            g["questions_right"] += sum(right)
            g["items_right"] += all(right)
            for kind, ok in zip(kinds, right):
                g["by_question"][kind][0] += ok
                g["by_question"][kind][1] += 1
    result: dict = {"overall": None, "by_hops": [], "by_haystack_frames": []}
    for (dim, value), g in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]).zfill(12))):
        row = {"items": g["items"], "missing": g["items"] - g["predicted"],
               "question_accuracy": g["questions_right"] / g["questions"] if g["questions"] else 0.0,
               "item_accuracy": g["items_right"] / g["items"],
               "by_question": {k: v[0] / v[1] for k, v in sorted(g["by_question"].items())}}
        if dim == "all":
            result["overall"] = row
        else:
            result[f"by_{dim}"].append({dim: value, **row})
    return result


def table(result: dict) -> str:
    kinds = sorted(result["overall"]["by_question"]) if result["overall"] else []
    header = ["group", "items", "missing", "question acc", "item acc", *[f"{k} acc" for k in kinds]]
    lines = []
    for label, rows, dim in (("hops", result["by_hops"], "hops"),
                             ("haystack frames", result["by_haystack_frames"], "haystack_frames")):
        for r in rows:
            lines.append((f"{label}={r[dim]}", r))
    if result["overall"]:
        lines.append(("all", result["overall"]))
    cells = [header] + [[name, str(r["items"]), str(r["missing"]), f"{r['question_accuracy']:.1%}",
                         f"{r['item_accuracy']:.1%}", *[f"{r['by_question'].get(k, 0.0):.1%}" for k in kinds]]
                        for name, r in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)
