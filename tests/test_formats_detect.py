"""Format detection from a path and the first bytes, and the reader entry point's own errors."""

from __future__ import annotations

import io
import json

import pytest

from bridge.errors import FormatError
from bridge.formats.evals import FORMATS, UnrecognizedFormat, detect_format, read_eval_file
from bridge.formats.evals.detect import top_level_keys

LM_EVAL_LINE = json.dumps({"doc_id": 0, "doc": {"question": "q" * 5000}, "target": "a", "arguments": {}})
CASES = [
    ("lm-eval-by-content", "org__m/samples_gsm8k_2025-01-28T01-08-13.454441.jsonl", LM_EVAL_LINE + "\n", "lm-eval"),
    ("lm-eval-head-cut-mid-line", "samples_arc_easy_2025-01-28T01-08-13.jsonl", LM_EVAL_LINE[:300], "lm-eval"),
    ("lm-eval-old-array", "pretrained__gpt2_hellaswag.jsonl", '[\n  {\n    "doc_id": 0,\n    "doc": {', "lm-eval"),
    ("openai-evals", "230417220821DPM75QNS_gpt-4_match.jsonl", '{"spec": {"eval_name": "x"}}\n', "openai-evals"),
    ("openai-evals-events-first", "run.jsonl",
     '{"run_id": "r", "event_id": 0, "sample_id": "s", "type": "sampling", "data": {}}\n', "openai-evals"),
    ("promptfoo-json", "output.json", '{"evalId": "eval-1", "results": {"version": 3, "results": [', "promptfoo"),
    ("promptfoo-jsonl", "output.jsonl", '{"testIdx": 0, "promptIdx": 0, "testCase": {}, "response": {}}\n',
     "promptfoo"),
    ("inspect-eval", "logs/2025-06-01_task.eval", "PK\x03\x04rest", "inspect"),
    ("inspect-eval-not-zip", "logs/notes.eval", "plain text", None),
    ("inspect-json", "logs/run.json", '{\n  "version": 2,\n  "status": "success",\n  "eval": {\n', "inspect"),
    ("lighteval-details", "2025-11-05T14-43-47.148527/details_leaderboard|arc:challenge|25_2025-11-05T14-43-47.148527"
     ".parquet", "PAR1....", "lighteval"),
    ("table-parquet", "data/test-00000-of-00001.parquet", "PAR1....", "table"),
    ("parquet-without-magic", "data/x.parquet", "garbage", None),
    ("table-jsonl", "preds.jsonl", '{"question": "q", "prediction": "a"}\n', "table"),
    ("table-json-array", "preds.json", '[{"prompt": "q", "output": "a"}]', "table"),
    ("table-json-data-key", "preds.json", '{"model": "m", "data": [{"query": "q"}]}', "table"),
    ("table-csv", "preds.csv", "id,Question,Answer\n1,q,a\n", "table"),
    ("table-tsv", "preds.tsv", "id\tinput\toutput\n1\tq\ta\n", "table"),
    ("csv-without-input", "metrics.csv", "step,loss\n1,0.5\n", None),
    ("lm-eval-results", "org__m/results_2025-01-28T01-08-13.454441.json", '{"results": {"gsm8k": {}}, "configs"',
     None),
    ("lighteval-results", "results_2025-11-05T14-43-47.json", '{"config_general": {}, "results": {}}', None),
    ("model-config", "config.json", '{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096}', None),
    ("tokenizer", "tokenizer.json", '{"version": "1.0", "added_tokens": [{"id": 0}]}', None),
    ("jsonl-without-input", "train.jsonl", '{"text": "hello"}\n', None),
    ("readme", "README.md", "# Results", None),
]


@pytest.mark.parametrize("path, head, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_detect_format(path, head, expected):
    assert detect_format(path, head.encode("latin-1" if head.startswith("PK") else "utf-8")) == expected
    assert expected is None or expected in FORMATS


@pytest.mark.parametrize(
    "text, keys",
    [('{"a": 1, "b": {"c": [1]}, "d": "x,y:z"}', {"a": "1", "b": "{", "d": '"'}),
     ('{"a": "escaped \\" quote", "b": [', {"a": '"', "b": "["}),
     ('{"a": "cut here', {"a": '"'}),
     ('{"a": 1, "b cut', {"a": "1"}),
     ("[1]", {})],
    ids=["nested", "escapes", "cut-in-value", "cut-in-key", "not-an-object"],
)
def test_top_level_keys(text, keys):
    assert top_level_keys(text) == keys


def test_auto_on_an_unknown_file_is_unrecognized():
    with pytest.raises(UnrecognizedFormat) as caught:
        read_eval_file("config.json", lambda: io.BytesIO(b'{"hidden_size": 4096}'))
    assert caught.value.file == "config.json"


def test_unknown_format_name():
    with pytest.raises(FormatError, match="unknown format 'csv'"):
        read_eval_file("a.csv", lambda: io.BytesIO(b"input\nx\n"), format="csv")


def test_unknown_column_role():
    with pytest.raises(FormatError, match="unknown role 'answer'") as caught:
        read_eval_file("a.csv", lambda: io.BytesIO(b"input\nx\n"), columns={"answer": ["x"]})
    assert caught.value.location == "columns"


def test_rows_are_not_read_until_iterated():
    opened = []

    def opener():
        opened.append(1)
        return io.BytesIO(b'{"input": "a"}\n{"input": "b"}\n')

    result = read_eval_file("t.jsonl", opener, format="table")
    count = len(opened)  # the table reader peeks at the first record to choose its columns
    assert count <= 1
    assert [row.inputs for row in result.rows] == [{"input": "a"}, {"input": "b"}]
    assert len(opened) == count + 1
