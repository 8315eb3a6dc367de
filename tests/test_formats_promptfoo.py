"""promptfoo outputs beyond the real sample: one provider, run errors, JSON Lines output."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

from bridge.formats.evals import Score, read_eval_file

UNIT = {"type": "continuous", "min": 0, "max": 1}


def result(test_idx: int, **changes) -> dict:
    base = {
        "id": f"r{test_idx}", "promptIdx": 0, "testIdx": test_idx, "provider": {"id": "openai:gpt-4o", "label": ""},
        "prompt": {"raw": f"Translate: word {test_idx}", "label": "Translate: {{word}}"},
        "vars": {"word": f"word {test_idx}"},
        "testCase": {"description": f"case {test_idx}", "vars": {"word": f"word {test_idx}"},
                     "assert": [{"type": "equals", "value": "mot"}, {"type": "latency", "threshold": 100}]},
        "response": {"output": "mot", "tokenUsage": {"total": 10}},
        "success": True, "score": 1, "namedScores": {"fluency": 0.75},
        "gradingResult": {"pass": True, "score": 1, "reason": "All assertions passed", "componentResults": [
            {"pass": True, "score": 1, "reason": "ok", "assertion": {"type": "equals", "value": "mot"}},
            {"pass": True, "score": 1, "reason": "ok", "assertion": {"type": "equals", "value": "Mot"}},
        ]},
        "latencyMs": 42, "failureReason": 0,
    }
    return {**base, **changes}


def document(*results) -> bytes:
    return json.dumps({"evalId": "eval-abc-2025-02-01T10:00:00", "results": {
        "version": 3, "timestamp": "2025-02-01T10:00:00.000Z", "results": list(results)}}).encode()


def read(path: str, data: bytes):
    return read_eval_file(path, lambda: io.BytesIO(data))


def test_single_provider_promptfoo():
    errored = result(1, success=False, score=0, error="API error: 500", failureReason=2, response={},
                     gradingResult=None)
    out = read("runs/translate.json", document(result(0), errored))
    assert (out.format, out.task, out.model) == ("promptfoo", "translate", "openai:gpt-4o")
    assert out.started_at == datetime(2025, 2, 1, 10, tzinfo=timezone.utc)
    ok, failed = list(out.rows)
    assert (ok.identity, failed.identity) == ("0", "1")  # one provider, one prompt: the test index alone
    assert ok.inputs == {"word": "word 0", "prompt": "Translate: word 0"}
    assert ok.expected == {"assert": [{"type": "equals", "value": "mot"}]}
    assert ok.scores == [Score("score", 1.0), Score("success", 1.0, feedback_config=UNIT), Score("fluency", 0.75),
                         Score("assert/equals", 1.0, comment="ok"), Score("assert/equals#2", 1.0, comment="ok")]
    assert ok.metadata["description"] == "case 0" and ok.metadata["latencyMs"] == 42
    assert ok.error is None
    assert failed.error == "API error: 500"  # failureReason 2: the run itself failed
    assert failed.outputs is None


def test_promptfoo_jsonl_output():
    data = "".join(json.dumps(item) + "\n" for item in (result(0), result(1))).encode()
    out = read("out.jsonl", data)
    assert out.format == "promptfoo" and out.model == "openai:gpt-4o"
    assert [row.outputs for row in out.rows] == [{"output": "mot"}, {"output": "mot"}]


def test_a_var_named_prompt_keeps_the_rendered_prompt_apart():
    (row,) = list(read("p.json", document(result(0, vars={"prompt": "word"}))).rows)
    assert row.inputs == {"prompt": "word", "rendered_prompt": "Translate: word 0"}
