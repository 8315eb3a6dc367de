"""Managed LangSmith rules (created, updated, reported, never someone else's) and gaps recovered from rule logs,
with the real SDK's session against the LangSmith emulator's rules API and its own rule worker."""

from __future__ import annotations

import pytest

from bridge.flows import rules
from bridge.rule_state import managed_key, named_key
from bridge.routing import route_rule
from bridge.events import parse_rule_delivery
from conftest import run_jobs
from apps import free_port
from test_flow_exports import REPO, chat_run, read_rows

SECRET = "ls-webhook-secret-4f1a9c"
NAME = f"hub-langsmith-bridge: {REPO}"


def rule_config(filter_: str | None = None, rate: float = 1.0, extra: str = "") -> str:
    rule = f"{{project: prod, sampling_rate: {rate}" + (f", filter: '{filter_}'" if filter_ else "") + "}"
    return f"""
exports:
  - repo: "{REPO}"
    rule: {rule}
    presets: [runs]
    flush_seconds: 0
{extra}
reconcile_minutes: 0
"""


@pytest.fixture
def bridge(smith, make_bridge, tmp_path):
    """A bridge whose public URL is a loopback port where nothing listens (the bridge is 'down' for deliveries)."""
    smith.create_project("prod")
    url = f"http://127.0.0.1:{free_port()}"

    def make(config: str, *, public: str | None = url, secret: str | None = SECRET):
        env = {"LANGSMITH_WEBHOOK_SECRET": secret} if secret else {}
        runtime = make_bridge(config, state=tmp_path / "state", **env)
        runtime.reachable_url, runtime.url_known = public, True
        return runtime

    make.url = url
    return make


def check(runtime) -> dict:
    rules.schedule(runtime, "test")
    jobs = run_jobs(runtime)
    job = next(j for j in jobs if j.kind == "rules")
    assert job.state == "succeeded", job.last_error
    return job.result


def state(runtime, key=managed_key(REPO)) -> dict:
    return runtime.rule_states.get(key)


def test_a_rule_is_created_from_config(smith, bridge):
    runtime = bridge(rule_config('has(feedback_key, "user_score")', 0.5))
    result = check(runtime)
    [rule] = smith.rules.list([], None)
    assert result["managed"][0]["action"] == "created"
    assert rule["display_name"] == NAME and rule["session_name"] == "prod" and rule["sampling_rate"] == 0.5
    assert rule["filter"] == 'has(feedback_key, "user_score")' and rule["is_enabled"]
    assert rule["webhooks"] == [{"url": bridge.url + "/webhooks/langsmith", "headers": {"X-Webhook-Secret": SECRET}}]
    assert runtime.settings.config.exports[0].current_rule_id == rule["id"]
    assert state(runtime)["rule_id"] == rule["id"] and state(runtime)["problem"] is None
    assert SECRET not in str(result) and SECRET not in str(state(runtime))
    assert check(runtime)["managed"][0]["action"] == "unchanged"
    assert smith.recorder.count("POST", r"/runs/rules$") == 1 and smith.recorder.count("PATCH", r"/runs/rules/") == 0


def test_deliveries_of_the_managed_rule_are_routed_even_after_a_restart(smith, bridge):
    runtime = bridge(rule_config())
    check(runtime)
    rule_id = state(runtime)["rule_id"]
    restarted = bridge(rule_config())  # same state dir: the id is remembered before LangSmith is asked again
    body = {"rule_id": rule_id, "runs": [{"id": "5f0e0000-0000-4000-8000-000000000001"}]}
    routed = route_rule(parse_rule_delivery(body), restarted.settings.config)
    assert isinstance(routed, list) and routed[0].payload["rule_id"] == rule_id


def test_the_rule_is_updated_when_the_filter_or_url_changes(smith, bridge):
    check(bridge(rule_config('eq(run_type, "llm")')))
    runtime = bridge(rule_config('eq(run_type, "chain")'))
    assert check(runtime)["managed"][0]["action"] == "updated (filter)"
    [rule] = smith.rules.list([], None)
    assert rule["filter"] == 'eq(run_type, "chain")'
    moved = bridge(rule_config('eq(run_type, "chain")'), public="https://bridge.example.com")
    assert check(moved)["managed"][0]["action"] == "updated (webhook URL)"
    [rule] = smith.rules.list([], None)
    assert rule["webhooks"][0]["url"] == "https://bridge.example.com/webhooks/langsmith"
    assert smith.recorder.count("POST", r"/runs/rules$") == 1  # updated in place, never a second rule


def test_a_new_secret_is_set_on_the_rule(smith, make_bridge, bridge):
    check(bridge(rule_config()))
    runtime = bridge(rule_config(), secret="a-new-secret-0d9e")
    assert check(runtime)["managed"][0]["action"] == "updated (secret)"
    [rule] = smith.rules.list([], None)
    assert rule["webhooks"][0]["headers"] == {"X-Webhook-Secret": "a-new-secret-0d9e"}
    assert "secret" not in rule["webhooks"][0]["url"]


def test_a_disabled_rule_is_reported_not_re_enabled(smith, bridge):
    runtime = bridge(rule_config('eq(run_type, "llm")'))
    check(runtime)
    rule_id = state(runtime)["rule_id"]
    smith.rules.rules[rule_id]["is_enabled"] = False  # a person switched it off in LangSmith
    changed = bridge(rule_config('eq(run_type, "chain")'))
    assert check(changed)["managed"][0]["action"] == "left alone"
    assert not smith.rules.rules[rule_id]["is_enabled"] and smith.recorder.count("PATCH", r"/runs/rules/") == 0
    assert "disabled in LangSmith" in state(changed)["problem"] and state(changed)["enabled"] == 0


def test_rules_the_bridge_did_not_create_are_never_touched(smith, bridge):
    theirs_same_name = smith.create_rule("prod", webhook_url="https://elsewhere.example.com/hook", name=NAME)
    named = smith.create_rule("prod", webhook_url="https://elsewhere.example.com/other", name="ops rule")
    extra = f'  - repo: "acme/named"\n    rule_id: "{named["id"]}"\n    presets: [runs]\n'
    runtime = bridge(rule_config().replace("reconcile_minutes", extra + "reconcile_minutes"))
    result = check(runtime)
    assert result["managed"][0]["action"] == "created"
    assert smith.recorder.count("PATCH", r"/runs/rules/") == 0 and smith.recorder.count("DELETE", r"/runs/rules/") == 0
    assert smith.rules.rules[theirs_same_name["id"]]["webhooks"][0]["url"] == "https://elsewhere.example.com/hook"
    assert len(smith.rules.rules) == 3
    assert state(runtime, named_key(named["id"]))["enabled"] == 1  # shown on the Wiring panel, read only


@pytest.mark.parametrize("public, secret, words", [(None, SECRET, "no public URL"), ("https://b.example", None,
                                                                                      "no secret")])
def test_no_public_url_or_no_secret_creates_nothing_and_says_why(smith, bridge, public, secret, words):
    runtime = bridge(rule_config(), public=public, secret=secret)
    result = check(runtime)
    assert result["managed"][0]["problem"].startswith(words) and words in state(runtime)["problem"]
    assert smith.recorder.count("POST", r"/runs/rules$") == 0 and not smith.rules.rules


def test_a_refused_rules_api_is_reported_in_plain_words(smith, bridge):
    smith.recorder.add_fault(r"/runs/rules$", method="GET", status=403, times=1, body="forbidden")
    runtime = bridge(rule_config())
    check(runtime)
    assert "refused the rules API (403)" in state(runtime)["problem"]


def test_a_missing_project_is_reported(smith, bridge):
    runtime = bridge(rule_config().replace("project: prod", "project: nowhere"))
    check(runtime)
    assert "project 'nowhere' not found" in state(runtime)["problem"]


# ---------------------------------------------------------------- recovery from the rule log


def seed_finished(smith, n: int, first: int = 0) -> list[str]:
    return [smith.add_run({**chat_run(first + i), "session_name": "prod"})["id"] for i in range(n)]


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_runs_applied_while_the_bridge_was_down_are_exported_once(hub, smith, bridge, rate):
    runtime = bridge(rule_config(rate=rate))
    check(runtime)
    rule_id = state(runtime)["rule_id"]
    ids = seed_finished(smith, 40)
    smith.apply_rules()  # the rule fires; every delivery fails (nothing listens at the bridge's URL)
    log = smith.rules.log(rule_id, None, None, 720, 0)
    applied = {e["run_id"] for e in log}
    assert all(e["webhooks"]["outcome"] == "error" for e in log)
    assert applied <= set(ids) and (applied == set(ids) if rate == 1.0 else 5 < len(applied) < 35)
    restarted = bridge(rule_config(rate=rate))
    result = check(restarted)
    assert result["logs"][0]["recovered"] == len(applied)
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(applied)  # exactly the applied runs, once
    assert smith.apply_rules() == 0 and check(restarted)["logs"][0]["missing"] == 0  # each run applied once
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(applied)
    assert state(restarted)["recovered"] == len(applied) and state(restarted)["last_applied"]


def test_the_log_is_read_from_the_last_check_on(hub, smith, bridge):
    runtime = bridge(rule_config())
    check(runtime)
    seed_finished(smith, 3)
    smith.apply_rules()
    check(runtime)
    since = state(runtime)["log_since"]
    later = seed_finished(smith, 2, first=10)
    smith.apply_rules()
    assert check(runtime)["logs"][0]["recovered"] == 2
    query = [r.query for r in smith.recorder.requests if r.path.endswith("/logs")][-1]
    assert "start_time=" in query and since[:10] in query
    assert set(later) <= {r["run_id"] for r in read_rows(hub)}


@pytest.mark.parametrize("backfill, words", [(False, "gaps cannot be known"),
                                             (True, "covered by the back-fill filter")])
def test_an_unavailable_log_falls_back_to_the_backfill_filter(hub, smith, bridge, backfill, words):
    extra = "    backfill: {project: prod}\n" if backfill else ""
    runtime = bridge(rule_config().replace("    flush_seconds: 0\n", "    flush_seconds: 0\n" + extra))
    check(runtime)
    smith.recorder.add_fault(r"/logs$", method="GET", status=404, times=1)
    result = check(runtime)
    assert words in result["logs"][0]["log"] and words in state(runtime)["log_status"]


# ---------------------------------------------------------------- the sandbox LangSmith delivering by itself


def exported(hub) -> list[str]:
    try:
        return [r["run_id"] for r in read_rows(hub)]
    except Exception:  # noqa: BLE001 - the dataset does not exist before the first commit
        return []


def test_the_sandbox_delivers_runs_traced_with_the_sdk(hub, smith, make_bridge, tmp_path):
    """The bridge creates its rule; the emulator's rule worker applies it to runs written by `@traceable` and
    POSTs them to the bridge's real endpoint (secret in the header); the runs reach the dataset."""
    from apps import launch_in_process
    from bridge.sandbox.demo import PROJECT, trace_conversations
    from conftest import LS_KEY, wait_for

    smith.create_project(PROJECT)
    runtime = make_bridge(rule_config().replace("project: prod", f"project: {PROJECT}"),
                          LANGSMITH_WEBHOOK_SECRET=SECRET)
    app = launch_in_process(runtime)
    try:
        runtime.set_reachable_url(app.base, app.base)
        runtime.start_workers()
        wait_for(lambda: smith.rules.rules, timeout=30, what="the bridge to create its rule")
        smith.rules.start(0.2)
        ids = trace_conversations(smith.url, LS_KEY)
        wait_for(lambda: sorted(exported(hub)) == sorted(ids), timeout=60, what="the traced runs to reach the dataset")
        [rule_id] = smith.rules.rules
        log = smith.rules.log(rule_id, None, None, 720, 0)
        assert sorted(e["run_id"] for e in log) == sorted(ids)
        assert {e["webhooks"]["outcome"] for e in log} == {"success"}
        rows = {r["run_id"]: r for r in read_rows(hub)}
        assert "reset my password" in rows[ids[0]]["inputs"] and "Settings" in rows[ids[0]]["outputs"]
    finally:
        smith.rules.stop()
        app.close()


# ---------------------------------------------------------------- the Overview's Wiring panel


def test_the_wiring_panel_shows_each_rule_from_the_store(hub, smith, bridge):
    from bridge.ui.wiring import langsmith_rules_html

    named = smith.create_rule("prod", webhook_url="https://elsewhere.example.com/other", name="ops rule")
    extra = (f'  - repo: "acme/named"\n    rule_id: "{named["id"]}"\n    presets: [runs]\n'
             '  - repo: "acme/late"\n    rule: {project: prod}\n')
    runtime = bridge(rule_config().replace("reconcile_minutes", extra + "reconcile_minutes"))
    before = langsmith_rules_html(runtime)
    assert before.count("not checked yet") == 3 and "ops rule" not in before  # from bridge.yaml alone
    check(runtime)
    seed_finished(smith, 4)
    smith.apply_rules()
    smith.rules.rules[named["id"]]["is_enabled"] = False
    restarted = bridge(rule_config().replace("reconcile_minutes", extra + "reconcile_minutes"))
    check(restarted)
    html = langsmith_rules_html(restarted)
    assert NAME in html and "ops rule" in html and "managed by the bridge" in html and "named in bridge.yaml" in html
    assert "<td>4</td>" in html  # recovered from the log
    assert "disabled in LangSmith" in html and "⏸️ disabled" in html
    assert SECRET not in html and "never" in html  # no delivery ever reached the (down) bridge
    summary = langsmith_rules_html(restarted, detailed=False)
    assert "3 rule(s), 1 with a problem" in summary and NAME not in summary


@pytest.mark.parametrize("entry, words", [
    ('rule_id: "r1"\n    rule: {project: prod}', "either rule_id"),
    ("presets: [runs]", "either rule_id"),
    ("rule: {project: prod, sampling_rate: 1.5}", "less than or equal to 1"),
    ("rule: {filter: 'eq(a, 1)'}", "project"),
])
def test_bad_rule_entries_are_refused_with_the_key(tmp_path, entry, words):
    from bridge.errors import ConfigError
    from bridge.settings import load_config

    path = tmp_path / "bridge.yaml"
    path.write_text(f'exports:\n  - repo: "acme/x"\n    {entry}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert words in str(caught.value) and "exports[0]" in str(caught.value)
