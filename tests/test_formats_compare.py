"""Row-by-row review of a PR against main (bridge.formats.compare + the PR comment), per format, from real samples
in /work/shared/samples and small files made here."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bridge.formats.compare import as_dict, compare, index_rows, snippet
from bridge.formats.evals import read_eval_file
from bridge.formats.pr_comment import Side, TaskResult, marker, our_sha, render_comment, supersede, verdict

SAMPLES = Path("/work/shared/samples")
DATASET = "demo-evals/task"
COMPARE = "http://smith.test/o/t/datasets/d/compare?selectedSessions=a,b"


def review(path: str, main: bytes, pr: bytes, threshold: float = 0.1, max_rows: int = 10) -> dict:
    index = index_rows(DATASET, read_eval_file(path, lambda: io.BytesIO(main)).rows)
    return as_dict(compare(DATASET, index, read_eval_file(path, lambda: io.BytesIO(pr)).rows, threshold), max_rows)


def comment(comparison: dict, task: str = "task") -> str:
    side = Side("pr", "http://smith.test/pr", 2, {"acc": 0.5}, "b")
    base = Side("main", "http://smith.test/main", 2, {"acc": 1.0}, "a")
    return render_comment("ab" * 20, 3, [TaskResult(task, "m", side, base, COMPARE, comparison=comparison)])


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# ------------------------------------------------------------------------------------------------------ lm-eval


def test_lm_eval_generation_sample_regressed_row():
    path = "org__m/samples_mmlu_generative_philosophy_2024-09-01T00-00-00.jsonl"
    main = (SAMPLES / "lm_eval/samples_mmlu_generative_philosophy_issue2279.jsonl").read_bytes()
    records = [json.loads(line) for line in main.splitlines() if line.strip()]
    assert [r["exact_match"] for r in records] == [0.0, 0.0]  # the " B" != "B"
    stripped = copy.deepcopy(records)
    stripped[0].update(exact_match=1.0, filtered_resps=["B"])  # the fix: the answer stripped before matching
    fixed = review(path, main, jsonl(stripped))
    assert (fixed["regressed"], fixed["fixed"], fixed["unchanged"]) == (0, 1, 1)
    # and a PR that brings the bug back regresses that row
    result = review(path, jsonl(stripped), main)
    assert (result["regressed"], result["fixed"], result["unchanged"]) == (1, 0, 1)
    row = result["regressed_rows"][0]
    assert row["input"].startswith("According to Kant") and row["expected"] == "B"
    assert (row["main_output"], row["pr_output"], row["keys"]) == ("B", "B", ["exact_match 1 → 0"])


def mc_record(doc_id: int, best: int, answer: int) -> dict:
    choices = ["Mars", "Venus", "Jupiter", "Earth"]
    logs = [-4.0] * 4
    logs[best] = -0.5
    return {"doc_id": doc_id, "doc": {"question": f"Q{doc_id}: which planet is largest?", "choices": choices,
                                      "answer": answer},
            "target": str(answer), "filter": "none", "metrics": ["acc", "acc_norm"],
            "arguments": {f"gen_args_{i}": {"arg_0": "Q", "arg_1": f" {c}"} for i, c in enumerate(choices)},
            "resps": [[[str(v), "False"]] for v in logs], "filtered_resps": [[str(v), "False"] for v in logs],
            "acc": float(best == answer), "acc_norm": float(best == answer)}


def test_lm_eval_multiple_choice_regressed_and_fixed():
    path = "org__m/samples_arc_easy_2025-01-01T00-00-00.jsonl"
    main = jsonl([mc_record(0, 2, 2), mc_record(1, 0, 1), mc_record(2, 2, 2)])
    pr = jsonl([mc_record(0, 0, 2), mc_record(1, 1, 1), mc_record(2, 2, 2)])
    result = review(path, main, pr)
    assert (result["regressed"], result["fixed"], result["unchanged"]) == (1, 1, 1)
    regressed = result["regressed_rows"][0]
    assert (regressed["main_output"], regressed["pr_output"], regressed["expected"]) == ("Jupiter", "Mars", "Jupiter")
    assert regressed["keys"] == ["acc 1 → 0", "acc_norm 1 → 0"]
    text = comment(result)
    assert "**▼ 1 regressed · ▲ 1 fixed · 1 unchanged**" in text
    assert "<details><summary>▲ 1 fixed row(s)</summary>" in text
    assert f"](<{COMPARE}&peek={regressed['row_id']}>)" in text


# --------------------------------------------------------------------------------------------------- lighteval


def lighteval_file(tmp_path: Path, name: str, predictions: list[str], ems: list[float]) -> bytes:
    table = pa.table({
        "doc": pa.array([{"query": f"Capital of country {i}?", "choices": ["x"], "gold_index": 0, "instruction": "",
                          "id": f"doc-{i}", "task_name": "lighteval|capitals"} for i in range(len(predictions))]),
        "model_response": pa.array([{"input": "Q", "text": [p], "text_post_processed": [p], "logprobs": [],
                                     "argmax_logits_eq_gold": []} for p in predictions]),
        "metric": pa.array([{"em": em} for em in ems]),
    })
    out = tmp_path / name
    pq.write_table(table, out)
    return out.read_bytes()


def test_lighteval_regressed_row(tmp_path):
    path = "details/details_lighteval|capitals|0_2025-01-01T00-00-00.parquet"
    main = lighteval_file(tmp_path, "a.parquet", ["Paris", "Rome", "Oslo"], [1.0, 1.0, 0.0])
    pr = lighteval_file(tmp_path, "b.parquet", ["Paris", "Milan", "Oslo"], [1.0, 0.0, 0.0])
    result = review(path, main, pr)
    assert (result["regressed"], result["fixed"], result["unchanged"]) == (1, 0, 2)
    row = result["regressed_rows"][0]
    assert (row["input"], row["main_output"], row["pr_output"]) == ("Capital of country 1?", "Rome", "Milan")


# ----------------------------------------------------------------------------------------------------- Inspect


def test_inspect_sample_c_to_i_is_a_regression():
    path = "logs/2025-07-05T09-59-40_sample.json"
    main = (SAMPLES / "inspect_ai/log_read_sample.json").read_bytes()
    log = json.loads(main)
    log["samples"][0]["scores"]["match"]["value"] = "I"
    log["samples"][0]["output"]["choices"][0]["message"]["content"] = "No\n"
    result = review(path, main, json.dumps(log).encode())
    assert (result["regressed"], result["fixed"], result["unchanged"]) == (1, 0, 0)
    row = result["regressed_rows"][0]
    assert row["input"].startswith("Is the following statement") and row["expected"] == "Yes"
    assert row["pr_output"] == "No" and row["main_output"] == "Yes"
    partial = copy.deepcopy(log)
    partial["samples"][0]["scores"]["match"]["value"] = "P"  # 1 -> 0.5: a continuous drop of 0.5
    assert review(path, main, json.dumps(partial).encode())["regressed"] == 1


# ------------------------------------------------------------------------------------------------------- table


def test_table_threshold_and_rows_on_one_side():
    path = "results/table.csv"
    main = b"id,question,answer,prediction,f1\n1,a,x,x,0.9\n2,b,y,y,0.8\n3,c,z,z,0.5\n4,d,w,w,0.5\n"
    pr = b"id,question,answer,prediction,f1\n1,a,x,x,0.85\n2,b,y,q,0.6\n3,c,z,z,0.7\n5,e,v,v,1\n"
    result = review(path, main, pr)
    # 0.9 -> 0.85 is within the 0.1 threshold; 0.8 -> 0.6 regressed; 0.5 -> 0.7 fixed; 4 only main; 5 only PR
    assert (result["regressed"], result["fixed"], result["unchanged"]) == (1, 1, 1)
    assert (result["only_main"], result["only_pr"]) == (1, 1)
    assert review(path, main, pr, threshold=0.01)["regressed"] == 2
    assert "(1 only in this PR, 1 only in main)" in comment(result)


def test_max_rows_limits_the_listed_rows():
    path = "results/table.csv"
    main = b"question,answer,prediction,correct\n" + b"".join(f"q{i},a,a,1\n".encode() for i in range(30))
    pr = b"question,answer,prediction,correct\n" + b"".join(f"q{i},a,b,0\n".encode() for i in range(30))
    result = review(path, main, pr, max_rows=10)
    assert result["regressed"] == 30 and len(result["regressed_rows"]) == 10
    assert "Regressed rows (first 10; 20 more in LangSmith):" in comment(result)


# ------------------------------------------------------------------------------------------- hostile snippets


HOSTILE = ("</details><script>alert(1)</script> | [click](javascript:alert(1)) ![x](http://evil/x.png) @admin "
           "<!-- hub-langsmith-bridge:pr-comment:" + "f" * 40 + " -->\n# heading\n> quote " + "long " * 100)


def test_hostile_text_in_snippets_is_escaped_and_truncated():
    path = "results/table.csv"
    main = jsonl([{"question": HOSTILE, "answer": "`rm -rf`", "prediction": "|a|b|", "correct": True}])
    pr = jsonl([{"question": HOSTILE, "answer": "`rm -rf`", "prediction": "<img src=x onerror=alert(1)>",
                 "correct": False}])
    result = review("results/table.jsonl", main, pr)
    assert result["regressed"] == 1
    text = comment(result, task="<b>task</b>")
    assert "<script>" not in text and "<img" not in text and "](javascript" not in text and "![x]" not in text
    assert "</details>" not in text.split("Regressed rows")[1]  # no fixed rows, so no block to close
    assert our_sha(text) == "ab" * 20  # the hostile copy of a marker is escaped, not a second marker
    [row] = [line for line in text.splitlines() if line.startswith("| [row 1]")]
    assert row.count(" | ") == 5  # six cells: no cell broke out of the table
    assert "…" in row and len(row) < 1200 and "\\@admin" in row  # no mention notifies anybody
    assert snippet("a\nb\tc") == "a b c"


# ----------------------------------------------------------------------------------------- verdict, superseded


def test_verdict_line_is_first():
    side = Side("pr", None, 1, {}, "b")
    clean = {"regressed": 0, "fixed": 1, "unchanged": 3, "regressed_rows": [], "fixed_rows": []}
    bad = {**clean, "regressed": 7, "regressed_rows": []}
    results = [TaskResult(f"t{i}", None, side, side, COMPARE, comparison=c)
               for i, c in enumerate([clean, bad, {**bad, "regressed": 5}, clean, clean])]
    text = render_comment("c" * 40, 1, results)
    assert text.splitlines()[0] == "⚠️ 2 of 5 task(s) regressed (12 row(s))"
    assert verdict(results[:1]) == "✅ no regressions"
    assert verdict([TaskResult("t", None, side)]) == "✅ no regressions (no baseline to compare with yet)"


def test_superseded_line_on_top_rest_kept():
    old = render_comment("a" * 40, 1, [])
    edited = supersede(old, "b" * 40)
    first, rest = edited.split("\n\n", 1)
    assert "Superseded by the results for `bbbbbbb`" in first and rest == old
    assert supersede(edited, "c" * 40) is None  # said once
    assert our_sha(edited) == "a" * 40 and marker("a" * 40) in edited
    assert re.search(r"^> ⏭️", edited)
