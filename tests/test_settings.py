
import pytest

from bridge.errors import ConfigError
from bridge.settings import Settings, load_config, parse_config

FULL = """
experiments:
  - repo: "acme/*-evals"
    repo_type: dataset
    files: ["**/samples_*.jsonl"]
    format: auto
    columns: {inputs: [question], expected: [answer], outputs: [prediction], scores: [exact_match]}
    dataset_name: "{repo_name}/{task}"
    experiment_name: "{model}@{short_sha}"
    branches: [main]
    pull_requests: true
    regression_threshold: 0.1
    max_rows: 10
    eval_results:
      model_repo: "{model}"
      pull_request: true
      benchmarks:
        "gsm8k*": {dataset: openai/gsm8k, task_id: main, score: exact_match}
        "arc_easy": {dataset: allenai/ai2_arc, task_id: ARC-Easy, score: acc}
exports:
  - rule_id: "d75d7417-0c57-4655-88fe-1db3cda3a47a"
    repo: "acme/prod-feedback"
    private: true
    presets: [runs, sft, preference, kto]
    feedback_links: {keys: [user_score], expires_hours: 168}
    redact: [emails, secrets, {pattern: "ACME-[0-9]+"}]
    flush_seconds: 60
    max_rows_per_commit: 5000
"""


def test_the_documented_example_is_valid(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text(FULL)
    config = load_config(path)
    assert config.experiments[0].columns.inputs == ["question"]
    assert config.experiments[0].eval_results.benchmarks["arc_easy"].task_id == "ARC-Easy"
    assert config.exports[0].presets == ["runs", "sft", "preference", "kto"]
    assert config.exports_for("d75d7417-0c57-4655-88fe-1db3cda3a47a")[0].repo == "acme/prod-feedback"
    assert config.exports_for("other") == []


def test_defaults():
    config = parse_config({"experiments": [{"repo": "a/b"}], "exports": [{"rule_id": "*", "repo": "a/c"}]}, "x")
    rule, target = config.experiments[0], config.exports[0]
    assert (rule.repo_type, rule.format, rule.branches, rule.pull_requests) == ("dataset", "auto", ["main"], True)
    assert rule.dataset_name == "{repo_name}/{task}" and rule.experiment_name == "{model}@{short_sha}"
    assert (target.private, target.presets, target.flush_seconds, target.max_rows_per_commit) == (True, ["runs"], 60, 5000)
    assert config.exports_for("any-rule") == [target]
    assert config.jobs.max_attempts == 8
    assert (rule.regression_threshold, rule.max_rows, rule.eval_results) == (0.1, 10, None)


@pytest.mark.parametrize("data, key, fragment", [
    ({"experiments": [{"repo": "a/b", "repo_type": "bucket"}]}, "experiments[0].repo_type", "'bucket'"),
    ({"experiments": [{"repo": "a/b", "colour": "red"}]}, "experiments[0].colour", "unknown key"),
    ({"experiments": [{}]}, "experiments[0].repo", "required"),
    ({"experiments": [{"repo": "nobody"}]}, "experiments[0].repo", "'nobody'"),
    ({"experiments": [{"repo": "a/b", "format": "csv"}]}, "experiments[0].format", "'csv'"),
    ({"experiments": [{"repo": "a/b", "dataset_name": "{repo}/{taks}"}]}, "experiments[0].dataset_name", "{taks}"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "presets": ["dpo"]}]}, "exports[0].presets[0]", "'dpo'"),
    ({"exports": [{"rule_id": "r", "repo": "a/*"}]}, "exports[0].repo", "'a/*'"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "redact": [{"pattern": "("}]}]}, "exports[0].redact", "'('"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "redact": ["phones"]}]}, "exports[0].redact", "'phones'"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "flush_seconds": -1}]}, "exports[0].flush_seconds", "-1"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "feedback_links": {"keys": []}}]}, "exports[0].feedback_links.keys", "[]"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "redact": [{"pattern": "x*"}]}]}, "exports[0].redact",
     "matches the empty string"),
    ({"exports": [{"rule_id": "r", "repo": "a/b", "redact": [{"pattern": "x", "nmae": "n"}]}]}, "exports[0].redact",
     "'nmae'"),
    ({"retention_days": 0}, "retention_days", "greater than 0"),
    ({"exprots": []}, "exprots", "unknown key"),
    ({"experiments": [{"repo": "a/b", "regression_threshold": -0.1}]}, "experiments[0].regression_threshold", "-0.1"),
    ({"experiments": [{"repo": "a/b", "eval_results": {"benchmarks": {"t": {"dataset": "gsm8k", "task_id": "main",
                                                                          "score": "acc"}}}}]},
     "experiments[0].eval_results.benchmarks.t.dataset", "'gsm8k'"),
    ({"experiments": [{"repo": "a/b", "eval_results": {"model_repo": "{modle}", "benchmarks": {"t": {
        "dataset": "a/b", "task_id": "main", "score": "acc"}}}}]}, "experiments[0].eval_results.model_repo", "{modle}"),
], ids=["bad-repo-type", "unknown-key", "missing-repo", "repo-not-owner-name", "bad-format", "bad-placeholder",
        "bad-preset", "export-repo-glob", "bad-regex", "bad-redact-preset", "negative-flush", "no-link-keys",
        "empty-match-pattern", "custom-rule-typo", "zero-retention", "typo-top-level", "negative-threshold", "benchmark-not-a-repo", "model-repo-placeholder"])
def test_invalid_config_names_the_key_and_value(data, key, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "bridge.yaml")
    message = str(info.value)
    assert message.startswith(f"bridge.yaml: {key}:"), message
    assert fragment in message


def test_missing_file_is_an_empty_config(tmp_path):
    assert load_config(tmp_path / "absent.yaml").experiments == []


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text("experiments: [\n")
    with pytest.raises(ConfigError, match="bridge.yaml: not valid YAML"):
        load_config(path)


def test_settings_from_env_never_expose_secrets(tmp_path):
    env = {"HF_TOKEN": "hf_secretvalue123", "LANGSMITH_API_KEY": "lsv2_secretvalue456",
           "BRIDGE_STATE_DIR": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:1/"}
    settings = Settings.from_env(env, tmp_path / "none.yaml")
    assert settings.hf_endpoint == "http://127.0.0.1:1"
    assert settings.missing() == ["WEBHOOK_SECRET", "LANGSMITH_WEBHOOK_SECRET"]
    assert "secretvalue" not in repr(settings)
    assert sorted(settings.secret_values()) == ["hf_secretvalue123", "lsv2_secretvalue456"]


def test_app_exits_2_with_one_message_on_invalid_config(tmp_path, capsys):
    import app

    path = tmp_path / "bridge.yaml"
    path.write_text("experiments:\n  - repo: acme/x\n    repo_type: bucket\n")
    assert app.main(["--config", str(path), "--no-share"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "experiments[0].repo_type" in err and "'bucket'" in err


def test_reachable_url_order(tmp_path):
    base = {"BRIDGE_STATE_DIR": str(tmp_path)}
    plain = Settings.from_env(base, tmp_path / "none.yaml")
    assert plain.reachable_url(None, "http://127.0.0.1:7860/") is None  # --no-share off a Space: nothing reaches us
    assert plain.reachable_url(None, "http://127.0.0.1:7860/", sandbox=True) == "http://127.0.0.1:7860"
    assert plain.reachable_url("https://abc.gradio.live/", "http://127.0.0.1:7860") == "https://abc.gradio.live"
    space = Settings.from_env({**base, "SPACE_HOST": "acme-bridge.hf.space"}, tmp_path / "none.yaml")
    assert space.reachable_url("https://abc.gradio.live", None) == "https://acme-bridge.hf.space"
    custom = Settings.from_env({**base, "SPACE_HOST": "x.hf.space", "BRIDGE_PUBLIC_URL": "https://b.example.com/"},
                               tmp_path / "none.yaml")
    assert custom.reachable_url("https://abc.gradio.live", None) == "https://b.example.com"


def test_public_url_must_be_a_url(tmp_path):
    with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL.*'bridge.example.com'"):
        Settings.from_env({"BRIDGE_STATE_DIR": str(tmp_path), "BRIDGE_PUBLIC_URL": "bridge.example.com"},
                          tmp_path / "none.yaml")


def test_redaction_rules_settings_accept_are_exactly_what_the_redactor_runs():
    """One validation: what starts is what runs (a named custom rule included), checked by the redactor itself."""
    from bridge.formats.redact import Redactor

    config = parse_config({"exports": [{"rule_id": "r", "repo": "a/b", "redact": [
        "emails", {"pattern": "ACME-[0-9]+", "name": "account"}]}]}, "bridge.yaml")
    redactor = Redactor(config.exports[0].redact)
    assert redactor.text("mail bob@example.com about ACME-42") == "mail [REDACTED:email] about [REDACTED:account]"


def test_entries_sharing_a_repo_merge_into_one_target():
    config = parse_config({"exports": [
        {"rule_id": "r1", "repo": "a/b", "presets": ["sft"], "flush_seconds": 60, "private": False},
        {"rule_id": "r2", "repo": "a/b", "presets": ["kto"], "flush_seconds": 30, "redact": ["emails"]},
        {"rule_id": "r1", "repo": "a/c"}]}, "bridge.yaml")
    merged = config.repo_target("a/b")
    assert merged.presets == ["runs", "sft", "kto"] and merged.flush_seconds == 30 and merged.private
    assert merged.redact == ["emails"]
    assert [(t.repo, t.presets) for t in config.exports_for("r1")] == [("a/b", ["runs", "sft"]), ("a/c", ["runs"])]
    assert config.export_repos() == ["a/b", "a/c"] and config.repo_target("x/y") is None
