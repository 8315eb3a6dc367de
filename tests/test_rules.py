"""Managed LangSmith rules (created, updated, reported, never someone else's) and gaps recovered from rule logs,
with the real SDK's session against the LangSmith emulator's rules API and its own rule worker."""

from __future__ import annotations

import pytest

from bridge.feedback_watch import FeedbackWatch
from bridge.flows import rules
from bridge.rule_state import managed_key, named_key
from bridge.routing import Ignored, route_rule
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


def test_the_web_process_routes_a_rule_the_job_process_created_after_it_started(smith, bridge):
    web = bridge(rule_config())  # started before the rule existed: it knows no id
    jobs = bridge(rule_config())  # the job process, on the same state dir, creates the rule
    check(jobs)
    rule_id = state(jobs)["rule_id"]
    body = {"rule_id": rule_id, "runs": [{"id": "5f0e0000-0000-4000-8000-000000000001"}]}
    routed = route_rule(parse_rule_delivery(body), web.settings.config)
    assert isinstance(routed, list) and routed[0].payload["rule_id"] == rule_id
    unknown = route_rule(parse_rule_delivery({**body, "rule_id": "not-a-rule"}), web.settings.config)
    assert isinstance(unknown, Ignored)


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
    prod = smith.store.session_by_name("prod")["id"]  # recovered runs' project: where their late feedback is looked for
    assert FeedbackWatch(runtime.store.db, runtime.store.clock).projects(REPO) == [prod]


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
        from bridge.ui.wiring import langsmith_rules_html

        assert langsmith_rules_html(runtime).count("never") == 1  # a delivery received; the log not read since
        job_id = rules.schedule(runtime, "test")
        wait_for(lambda: runtime.store.get(job_id).state == "succeeded", timeout=30, what="the rules check")
        html = langsmith_rules_html(runtime)
        assert "never" not in html and "</svg> enabled" in html and "<td>0</td>" in html  # nothing was missing
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
    assert "disabled in LangSmith" in html and "</svg> disabled" in html
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


# ---------------------------------------------------------------- the emulator's rules API and delivery rules


class Receiver:
    """A webhook receiver on loopback answering the statuses it is given, one per request (then 200)."""

    def __init__(self, statuses: list, delay: float = 0.0) -> None:
        import http.server
        import threading

        self.statuses, self.delay, self.hits = list(statuses), delay, []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                import time

                self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.hits.append(dict(self.headers))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("statuses, delay, posts, outcome", [
    ([200], 0.0, 1, "success"),
    ([404], 0.0, 1, "error"),            # a 4xx is final
    ([503, 502], 0.0, 3, "success"),     # a 5xx is retried, up to 2 times
    ([500, 500, 500], 0.0, 3, "error"),
    ([200], 0.5, 1, "error"),            # a reply slower than the timeout is a failure, not retried
])
def test_the_emulator_delivers_with_langsmiths_rules(smith, statuses, delay, posts, outcome):
    smith.create_project("prod")
    receiver = Receiver(statuses, delay)
    smith.rules.timeout, smith.rules.retry_pause = 0.3, 0.01
    try:
        rule = smith.create_rule("prod", webhook_url=receiver.url, headers={"X-Webhook-Secret": SECRET})
        seed_finished(smith, 2)
        assert smith.apply_rules() == 2 and smith.apply_rules() == 0  # each run once per rule
        [first, second] = smith.rules.log(rule["id"], None, None, 720, 0)
        assert first["webhooks"]["outcome"] == outcome and first["run_session_id"] == rule["session_id"]
        assert len(receiver.hits) == posts and receiver.hits[0]["X-Webhook-Secret"] == SECRET
    finally:
        receiver.close()


def test_the_emulator_retries_a_refused_connection_twice(smith):
    smith.create_project("prod")
    smith.rules.retry_pause = 0.01
    rule = smith.create_rule("prod", webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    seed_finished(smith, 1)
    smith.apply_rules()
    [entry] = smith.rules.log(rule["id"], None, None, 720, 0)
    assert entry["webhooks"]["outcome"] == "error" and entry["webhooks"]["payload"][0]["error"] == "connection failed"


def test_the_emulator_applies_runs_that_arrive_after_the_rule_only(smith):
    smith.create_project("prod")
    before = seed_finished(smith, 3)
    rule = smith.create_rule("prod", filter='eq(run_type, "llm")')
    after = seed_finished(smith, 2, first=5)
    smith.add_run({"name": "tool", "run_type": "tool", "session_name": "prod", "start_time": "2026-11-20T10:00:00",
                   "end_time": "2026-11-20T10:00:01"})
    smith.add_run({**chat_run(9), "session_name": "prod", "end_time": None})  # still running: not yet
    assert smith.apply_rules() == 2
    assert {e["run_id"] for e in smith.rules.log(rule["id"], None, None, 720, 0)} == set(after)
    assert not set(before) & {e["run_id"] for e in smith.rules.log(rule["id"], None, None, 720, 0)}


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/api/v1/runs/rules", {"sampling_rate": 1}, 422),                       # display_name required
    ("POST", "/api/v1/runs/rules", {"display_name": "x", "sampling_rate": 2}, 422),  # 0..1
    ("POST", "/api/v1/runs/rules", {"display_name": "x", "sampling_rate": 1}, 422),  # session_id xor dataset_id
    ("GET", "/api/v1/runs/rules/00000000-0000-4000-8000-000000000009/logs?limit=721", None, 400),
    ("GET", "/api/v1/runs/rules/00000000-0000-4000-8000-000000000009/last_applied", None, 404),
    ("PATCH", "/runs/rules/00000000-0000-4000-8000-000000000009", {"display_name": "x", "sampling_rate": 1}, 404),
])
def test_the_emulator_rules_api_refuses_what_langsmith_refuses(smith, method, path, body, status):
    import requests

    from conftest import LS_KEY

    answer = requests.request(method, smith.url + path, json=body, headers={"x-api-key": LS_KEY}, timeout=5)
    assert answer.status_code == status, answer.text


def test_an_update_keeps_what_a_person_added_to_the_bridges_rule(smith, bridge):
    check(bridge(rule_config('eq(run_type, "llm")')))
    [rule] = smith.rules.rules.values()
    rule["webhooks"].append({"url": "https://alerts.example.com/hook", "headers": {}})
    rule["add_to_dataset_id"] = "00000000-0000-4000-8000-0000000000d5"
    assert check(bridge(rule_config('eq(run_type, "chain")')))["managed"][0]["action"] == "updated (filter)"
    [rule] = smith.rules.rules.values()
    assert [w["url"] for w in rule["webhooks"]] == [bridge.url + "/webhooks/langsmith", "https://alerts.example.com/hook"]
    assert rule["add_to_dataset_id"] == "00000000-0000-4000-8000-0000000000d5" and rule["filter"] == 'eq(run_type, "chain")'
