"""The mixture checks count text tokens and parse JSONL lines in bulk (numpy over code points, orjson): the counts,
ids and bad-line reports are those of the per-line rule (json.loads, then schemas.stats.count_text_tokens on the
str of every dict turn's value), transcribed here independently, on tricky text and on malformed lines."""

from __future__ import annotations

import json
import random
import re

import pytest

from pipeline.io import storage
from pipeline.stats import text_tokens
from pipeline.stats.mixture_parts import TaskPlan, jsonl_part
from schemas import stats as stats_schema

TRICKY = [
    "", " ", "\t\n", "<image>", "<image>\nWhat happens first?", "<<image>>", "<imag<image>e>", "a<image>b",
    "It's 3:45 p.m. -- the man (left) says \"hi!\"...", "naïve café", "nai\u0308ve",  # combining mark
    "東京で2人が走る。", "٣ apples", "x² + Ⅻ", "emoji 🎬🎬 ok", "مرحبا بالعالم", "a\u00a0b\u2028c\x1cd\x1fe",
    "snake_case_word __init__", "---", "\u200b\u200d", "a\ud800b",  # zero-width, a lone surrogate
]


def reference_tokens(texts) -> int:
    return sum(len(re.findall(r"\w+|[^\w\s]", t.replace("<image>", " "))) for t in texts)


def test_every_code_point_is_classed_as_python_re_classes_it():
    classes = text_tokens.code_point_classes()
    for point in range(0x110000):
        char = chr(point)
        expected = 1 if char.isalnum() or char == "_" else 0 if char.isspace() else 2
        assert classes[point] == expected, hex(point)


def test_tricky_texts_count_as_the_per_text_rule():
    for text in TRICKY:
        assert text_tokens.count([text]) == reference_tokens([text]) == stats_schema.count_text_tokens(text), text
    assert text_tokens.count(TRICKY) == reference_tokens(TRICKY)
    assert text_tokens.count([]) == 0 and text_tokens.count([""]) == 0


def test_random_unicode_texts_count_as_the_per_text_rule():
    rng = random.Random(11)
    pool = [chr(rng.randrange(0x110000)) for _ in range(4000)] + list(" \n\t.,!?'\"-_<>image") * 50
    texts = ["".join(rng.choice(pool) for _ in range(rng.randrange(0, 40))) for _ in range(3000)]
    texts += ["<image>" + t for t in texts[:200]]
    assert text_tokens.count(texts) == reference_tokens(texts)
    for i in range(0, len(texts), 97):
        assert text_tokens.count(texts[i:i + 3]) == reference_tokens(texts[i:i + 3])


LINES = [
    json.dumps({"id": "a", "conversations": [{"from": "human", "value": "<image>\nWhat is naïve? (1)"},
                                             {"from": "gpt", "value": "東京 -- it's 3:45!"}]}),
    '{"id": 7, "conversations": [{"value": 12345678901234567890123}, {"value": null}, {"value": 1.5}, {}, "x"]}',
    '{"id": 123456789012345678901234567890, "conversations": [{"value": [1, "two"]}]}',
    '{"id": "nan", "score": NaN, "conversations": [{"value": "not a number: NaN"}]}',
    '{"id": "surrogate", "conversations": [{"value": "lone \\udc00 here"}]}',
    '{"id": 1e400, "conversations": []}',
    '{"id": "no-turns"}',
    '{"id": "empty", "conversations": null}',
    '{"conversations": [{"value": "no id"}]}',
    '["a", "list"]',
    '"a string"',
    '{not json',
    '{"id": "dup", "id": "dup-last", "conversations": [{"value": "x"}]}',
    '{"id": true, "conversations": {"value": "a dict, not a list"}}',
]


def reference_part(raw_lines: list[bytes]) -> tuple[dict, list]:
    """The per-line rule, transcribed: json.loads, str of the id, str of each dict turn's value."""
    lines, tokens, bad, bad_count, ids = 0, 0, [], 0, []
    for raw in raw_lines:
        lines += 1
        try:
            record = json.loads(raw.decode("utf-8"))
            record_id = str(record["id"])
            turns = record.get("conversations") or []
        except (ValueError, KeyError, TypeError):
            bad_count += 1
            if len(bad) < stats_schema.EXAMPLES:
                bad.append(lines)
            continue
        ids.append(record_id)
        tokens += reference_tokens(str(t.get("value", "")) for t in turns if isinstance(t, dict))
    return {"lines": lines, "bad_lines": bad, "bad_count": bad_count, "text_tokens": tokens}, ids


def test_jsonl_part_reads_tricky_and_malformed_lines_as_json_loads(tmp_path):
    raw_lines = [line.encode("utf-8") for line in LINES] + [b'{"id": "bad-utf8 \xff"}'] + \
        [json.dumps({"id": f"r{i}", "conversations": [{"value": t}]}, ensure_ascii=i % 2 == 0).encode("utf-8")
         for i, t in enumerate(TRICKY) if "\ud800" not in t]
    path = tmp_path / "mixtures" / "stage3" / "qa.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(raw_lines) + b"\n")
    plan = TaskPlan("stage3", "qa", "mixtures/stage3/qa.jsonl", (), ((0, path.stat().st_size),), 1024)
    summary, ids = jsonl_part(plan, 0, str(tmp_path), storage.settings())
    expected_summary, expected_ids = reference_part(raw_lines)
    assert expected_summary["bad_count"] == 5 and "7" in expected_ids and "inf" in expected_ids
    assert summary == expected_summary
    assert ids.to_pylist() == expected_ids


@pytest.mark.parametrize("rule", [r"\w+", r"\w+|[^\w\s]|<"])
def test_another_counting_rule_is_counted_text_by_text(monkeypatch, rule):
    monkeypatch.setattr(stats_schema, "TEXT_TOKEN_PATTERN", re.compile(rule))
    text_tokens.code_point_classes.cache_clear()
    try:
        assert text_tokens.count(TRICKY[:-1]) == sum(stats_schema.count_text_tokens(t) for t in TRICKY[:-1])
    finally:
        text_tokens.code_point_classes.cache_clear()
