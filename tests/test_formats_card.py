"""Dataset card and shard layout (bridge.formats.card)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from bridge.formats.card import COLUMN_MEANING, render_card, shard_path
from bridge.formats.runs import run_row
from bridge.formats.training import PRESETS, SCHEMAS, preset_rows, to_parquet_bytes, to_table

SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
RULES = ["d75d7417-0c57-4655-88fe-1db3cda3a47a", "0b9c0000-0000-4000-8000-000000000000"]


def header(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, "card must start with a YAML header"
    return yaml.safe_load(match.group(1))


def test_card_header_has_one_config_per_preset():
    card = render_card("acme/support-traces", ["sft", "preference", "kto"], RULES, "0.1.0")
    meta = header(card)
    configs = meta["configs"]
    assert [c["config_name"] for c in configs] == list(PRESETS)
    for config in configs:
        assert config["data_files"] == [{"split": "train", "path": f"{config['config_name']}/**/*.parquet"}]
        assert all(SPLIT_NAME.match(f["split"]) for f in config["data_files"])
    assert [c["config_name"] for c in configs if c.get("default")] == ["runs"]
    assert {"langsmith", "sft", "dpo", "kto"} <= set(meta["tags"])


def test_tool_configs_are_listed_and_documented():
    card = render_card("acme/support-traces", ["sft_tools", "kto", "kto_tools"], RULES, "0.1.0")
    assert [c["config_name"] for c in header(card)["configs"]] == ["runs", "sft_tools", "kto", "kto_tools"]
    assert "tool-calling" in header(card)["tags"]
    assert "### `sft_tools`" in card and "`tool_calls`, `tool_call_id`, `name` where set" in card
    assert "list of messages (`role`, `content`)" in card  # kto: plain messages


def test_runs_is_always_a_config():
    meta = header(render_card("acme/traces", [], [], "0.1.0"))
    assert [c["config_name"] for c in meta["configs"]] == ["runs"]
    assert "task_categories" not in meta


def test_card_is_deterministic_and_order_independent():
    one = render_card("acme/traces", ["kto", "sft"], RULES, "0.1.0", redaction=["secrets", "emails"])
    two = render_card("acme/traces", ["sft", "kto", "sft"], list(reversed(RULES)), "0.1.0",
                      redaction=["emails", "secrets"])
    assert one == two
    assert not re.search(r"\d{4}-\d{2}-\d{2}", one)  # no dates: README changes only when inputs do
    assert render_card("acme/traces", ["kto", "sft"], RULES, "0.2.0") != one


def test_card_body_documents_columns_provenance_and_loading():
    card = render_card("acme/traces", ["sft"], RULES, "0.1.0", positive_threshold=1.0, redaction=["secrets"],
                       license="cc-by-4.0")
    for preset in ("runs", "sft"):
        for name in SCHEMAS[preset].names:
            assert f"| `{name}` |" in card
    assert all(COLUMN_MEANING.get(name) for schema in SCHEMAS.values() for name in schema.names)
    assert 'load_dataset("acme/traces", "runs", split="train")' in card
    assert 'load_dataset("acme/traces", "sft", split="train")' in card
    assert all(f"`{rule}`" in card for rule in RULES) and "0.1.0" in card
    assert "Redaction before export: secrets." in card
    assert header(card)["license"] == "cc-by-4.0"


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown presets"):
        render_card("acme/traces", ["dpo"], [], "0.1.0")


@pytest.mark.parametrize("when, expected", [
    pytest.param(datetime(2024, 4, 5, 23, 30, tzinfo=timezone.utc), "runs/2024/04/05/b-1.parquet", id="utc"),
    pytest.param(datetime(2024, 4, 5, 23, 30), "runs/2024/04/05/b-1.parquet", id="naive-is-utc"),
    pytest.param(datetime(2024, 4, 6, 1, 30, tzinfo=timezone(timedelta(hours=2))), "runs/2024/04/05/b-1.parquet",
                 id="converted-to-utc"),
])
def test_shard_path(when, expected):
    assert shard_path("runs", when, "b-1") == expected


@pytest.mark.parametrize("preset, shard_id", [
    pytest.param("dpo", "x", id="unknown-preset"),
    pytest.param("runs", "../x", id="path-traversal"),
    pytest.param("runs", "a/b", id="slash"),
    pytest.param("runs", "", id="empty"),
])
def test_shard_path_rejects(preset, shard_id):
    with pytest.raises(ValueError):
        shard_path(preset, datetime(2024, 1, 1), shard_id)


def test_datasets_loads_the_written_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    run = {"id": "11111111-1111-4111-8111-111111111111", "name": "ChatOpenAI", "run_type": "llm",
           "start_time": "2024-04-05T01:28:54.085646", "end_time": "2024-04-05T01:28:55.085646",
           "inputs": {"messages": [{"role": "user", "content": "2+2?"}]},
           "outputs": {"choices": [{"message": {"role": "assistant", "content": "4"}}]}}
    feedback = [{"id": "f1", "run_id": run["id"], "key": "thumbs", "score": 1, "created_at": "2024-04-05T02:00:00"}]
    sparse = {"id": "22222222-2222-4222-8222-222222222222", "start_time": "2024-04-06T00:00:00"}
    shards = {
        shard_path("runs", datetime(2024, 4, 5), "a"): to_table("runs", [run_row(
            run, rule_id="rule", feedback=feedback, feedback_urls=[], web_url="https://smith.langchain.com/x")]),
        shard_path("runs", datetime(2024, 4, 6), "b"): to_table("runs", [run_row(
            sparse, rule_id=None, feedback=[], feedback_urls=[], web_url=None)]),
        shard_path("sft", datetime(2024, 4, 5), "a"): to_table("sft", preset_rows("sft", run, feedback)[0]),
        shard_path("kto", datetime(2024, 4, 5), "a"): to_table("kto", preset_rows("kto", run, feedback)[0]),
    }
    repo, cache = tmp_path / "repo", str(tmp_path / "cache")
    for path, table in shards.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(to_parquet_bytes(table))
    (repo / "README.md").write_text(render_card("acme/traces", ["sft", "kto"], ["rule"], "0.1.0"))

    def load(*config):
        return datasets.load_dataset(str(repo), *config, split="train", cache_dir=cache)

    runs = load("runs")
    assert sorted(runs["run_id"]) == [run["id"], sparse["id"]]
    assert runs.features["feedback"] is not None
    sft = load("sft")
    assert sft[0]["messages"][-1]["content"] == "4" and sft[0]["run_id"] == run["id"]
    kto = load("kto")
    assert kto[0]["label"] is True
    assert load().num_rows == 2  # `runs` is the default config
