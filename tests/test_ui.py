"""The operator UI in-process: access decisions, rendering (escaping, secrets), and its handlers over gradio's HTTP API.

The HTTP tests call handlers the way an attacker would: straight at `/gradio_api/queue/join` and `/gradio_api/call/`
with the function's index or name from `/config`, bypassing the page. Workers are not started, so jobs stay queued.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from typing import Any

import pytest
import requests

from apps import launch_in_process
from bridge import access
from bridge.access import Policy, authorize
from bridge.jobs import Job
from bridge.routing import JobSpec
from bridge.runtime import build_runtime
from bridge.settings import Settings
from bridge.ui import jobs as jobs_page
from bridge.ui import review as review_page
from bridge.ui.config_page import config_yaml, env_html

HF = "hf_ui_test_token_51d0"
LS = "lsv2_ui_test_key_77aa"
HOOK = "hook-secret-ui-3c1f"
PASSWORD = "admin-pass-ui-9e2b"
SECRETS = [HF, LS, HOOK, PASSWORD]
MARKER = "acme/payload-marker-7731"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
exports:
  - rule_id: "rule-1"
    repo: "acme/feedback"
    feedback_links: {keys: [user_score]}
    backfill: {project: "support-bot"}
"""
PRESIGNED = "http://127.0.0.1:9/api/v1/feedback/tokens/0b7f4c3e-presigned"


def make_runtime(tmp_path, **env: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "bridge.yaml").write_text(CONFIG)
    values = {"HF_TOKEN": HF, "LANGSMITH_API_KEY": LS, "WEBHOOK_SECRET": HOOK, "BRIDGE_STATE_DIR": str(tmp_path),
              "HF_ENDPOINT": "http://127.0.0.1:9", "LANGSMITH_ENDPOINT": "http://127.0.0.1:9", **env}
    return build_runtime(Settings.from_env(values, tmp_path / "bridge.yaml"))


# ---------------------------------------------------------------- access decisions
class FakeSettings:
    def __init__(self, space_id=None, admins=(), password=None):
        self.space_id, self.admins = space_id, admins
        self.admin_password = None if password is None else type("S", (), {"get_secret_value": lambda s: password})()


@pytest.mark.parametrize("settings, host, share, mode", [
    (FakeSettings(space_id="acme/bridge"), "0.0.0.0", False, "oauth"),
    (FakeSettings(), None, False, "local"),
    (FakeSettings(), "127.0.0.1", False, "local"),
    (FakeSettings(), "::1", False, "local"),
    (FakeSettings(), "localhost", True, "password"),
    (FakeSettings(), "0.0.0.0", False, "password"),
    (FakeSettings(), "192.168.1.4", False, "password"),
], ids=["space", "default-host", "loopback", "ipv6-loopback", "share-link", "all-interfaces", "lan"])
def test_policy_follows_where_the_app_listens(settings, host, share, mode, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert access.policy_for(settings, host, share).mode == mode


def test_gradio_server_name_counts_when_no_host_is_given(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert access.policy_for(FakeSettings(), None, False).mode == "password"


def profile(name: str, *orgs: str) -> dict:
    return {"preferred_username": name, "name": name.title(), "profile": "", "picture": "",
            "orgs": [{"preferred_username": org, "name": org.upper(), "sub": "x"} for org in orgs]}


@pytest.mark.parametrize("who, allowed, fragment", [
    (profile("alice"), True, ""),
    (profile("Alice"), True, ""),
    (profile("bob", "acme-labs"), True, ""),
    (profile("mallory", "other-org"), False, "not in BRIDGE_ADMINS"),
    ({**profile("eve"), "orgs": [{"preferred_username": "evil", "name": "acme-labs"}]}, False, "not in BRIDGE_ADMINS"),
    (None, False, "Sign in with Hugging Face"),
], ids=["listed-user", "case-insensitive", "member-of-listed-org", "outsider", "org-display-name-is-not-a-handle",
        "anonymous"])
def test_oauth_admits_listed_users_and_org_members(who, allowed, fragment):
    decision = authorize(Policy("oauth", ("alice", "acme-labs")), username=None, profile=who, client_host="1.2.3.4")
    assert decision.allowed is allowed and fragment in decision.reason


def test_oauth_without_admins_lets_nobody_in():
    decision = authorize(Policy("oauth", ()), username=None, profile=profile("alice"), client_host="127.0.0.1")
    assert not decision.allowed and "BRIDGE_ADMINS" in decision.reason


def test_local_mode_only_serves_loopback_clients():
    policy = Policy("local")
    assert authorize(policy, username=None, profile=None, client_host="127.0.0.1").allowed
    assert authorize(policy, username=None, profile=None, client_host="::1").allowed
    refused = authorize(policy, username=None, profile=None, client_host="10.0.0.8")
    assert not refused.allowed and "this machine" in refused.reason


def test_password_mode_needs_a_password_and_a_login():
    closed = authorize(Policy("password", (), False), username="admin", profile=None, client_host="127.0.0.1")
    assert not closed.allowed and "BRIDGE_ADMIN_PASSWORD is not set" in closed.reason
    anonymous = authorize(Policy("password", (), True), username=None, profile=None, client_host="127.0.0.1")
    assert not anonymous.allowed and "Sign in" in anonymous.reason
    assert authorize(Policy("password", (), True), username="admin", profile=None, client_host="8.8.8.8").allowed


def test_launch_options_adds_gradio_auth_only_when_a_password_protects_a_public_app(tmp_path):
    local = make_runtime(tmp_path / "a")
    assert access.launch_options(local, "127.0.0.1", False) == {}
    assert access.current_policy(local).mode == "local"
    public = make_runtime(tmp_path / "b", BRIDGE_ADMIN_PASSWORD=PASSWORD)
    options = access.launch_options(public, "0.0.0.0", False)
    check = options["auth"]
    assert check("admin", PASSWORD) and not check("admin", "wrong") and not check("someone", PASSWORD)
    open_app = make_runtime(tmp_path / "c")
    assert access.launch_options(open_app, "0.0.0.0", False) == {}
    assert access.current_policy(open_app) == Policy("password", (), False)


def test_an_app_launched_without_launch_options_refuses_actions(tmp_path):
    runtime = make_runtime(tmp_path)
    assert not access.authorize_request(runtime, None, None).allowed


# ---------------------------------------------------------------- rendering
def job(**fields: Any) -> Job:
    now = time.time()
    base = dict(id=7, kind="experiment", key="k", subject="s", payload={}, state="succeeded", trigger="manual",
                attempts=1, max_attempts=8, next_attempt_at=now, last_error=None, result=None, progress=None,
                created_at=now - 60, updated_at=now, started_at=now - 5, finished_at=now - 1)
    return Job(**{**base, **fields})


def test_jobs_table_escapes_payload_text_and_links_only_http():
    hostile = job(subject='<img src=x onerror="alert(1)">${7*7}', last_error="<script>bad()</script>", state="failed",
                  result={"files": [{"file": "a.jsonl", "status": "uploaded", "experiment_url": "javascript:alert(1)"},
                                    {"file": "b.jsonl", "status": "uploaded", "experiment_url": "https://smith/x"}],
                          "comment_url": "https://hub/discussions/3#c1"})
    page = jobs_page.jobs_table([hostile], 7, time.time(), False)
    assert "<img" not in page and "<script>" not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page
    assert 'href="https://smith/x"' in page and 'href="https://hub/discussions/3#c1"' in page
    assert 'data-job="7"' in page and "selected" in page


def test_job_links_name_experiment_commit_and_comment():
    exp = job(result={"files": [{"experiment_url": "https://s/1"}, {"experiment_url": "https://s/2"}],
                      "comment_url": "https://h/c"})
    assert jobs_page.job_links(exp) == [("LangSmith 1", "https://s/1"), ("LangSmith 2", "https://s/2"),
                                        ("PR comment", "https://h/c")]
    flush = job(kind="flush", result={"commit_url": "https://h/tree"})
    assert jobs_page.job_links(flush) == [("HF commit", "https://h/tree")]


def test_running_job_shows_progress():
    running = job(state="running", progress={"done": 3, "total": 10, "unit": "files"}, finished_at=None)
    assert "3 of 10 files" in jobs_page.jobs_table([running], None, time.time(), False)


def test_empty_tables_say_what_to_do_next():
    assert "Run a job" in jobs_page.jobs_table([], None, time.time(), False)
    assert "all" in jobs_page.jobs_table([], None, time.time(), True)
    assert "Back-fill" in review_page.review_html([], {}, time.time())


def test_job_detail_never_shows_secrets_and_summarises_exports(tmp_path):
    runtime = make_runtime(tmp_path)
    store = runtime.store
    runs = [{"id": f"run-{i}", "inputs": {"q": "x" * 5000}} for i in range(40)]
    payload = {"rule_id": "rule-1", "runs": len(runs), "note": f"token {HF} leaked", "api_key": LS}  # as routed
    _, ids = store.record_delivery("langsmith", json.dumps({"runs": runs}),
                                   [JobSpec("export", "export:1", payload, "rule")])
    export = store.get(ids[0])
    page = jobs_page.detail_html(export, store.attempts(export.id), store, time.time())
    assert "40 run(s)" in page and "run-0" in page and "x" * 100 not in page
    assert all(secret not in page for secret in SECRETS)
    assert "stored_body" in page

    feedback = store.enqueue("feedback", "fb:1", {"url": PRESIGNED, "run_id": "r", "key": "user_score"})[0]
    page = jobs_page.detail_html(feedback, [], store, time.time())
    assert PRESIGNED not in page and "presigned" in page


def recent_run(**fields: Any) -> dict:
    base = {"repo": "acme/feedback", "run_id": "11111111-2222-3333-4444-555555555555", "name": "<b>Chat</b>",
            "run_type": "llm", "start_time": "2026-11-21 08:18:59+00:00",
            "inputs": json.dumps({"messages": [{"role": "user", "content": "<script>hi()</script>"}]}),
            "outputs": json.dumps({"generations": [[{"text": "Paris"}]]}), "feedback": [],
            "feedback_urls": [{"key": "user_score", "url": PRESIGNED, "expires_at": "2999-01-01T00:00:00+00:00"}],
            "run_url": "https://smith/o/t/projects/p/s/r/1"}
    return {**base, **fields}


def test_review_cards_escape_runs_and_never_carry_the_presigned_link():
    page = review_page.review_html([recent_run()], {}, time.time())
    assert "&lt;script&gt;hi()&lt;/script&gt;" in page and "<script>" not in page and "<b>Chat</b>" not in page
    assert "Paris" in page and 'data-act="up"' in page and PRESIGNED not in page


def test_review_explains_how_to_enable_feedback_links_and_expiry():
    page = review_page.review_html([recent_run(feedback_urls=[])], {}, time.time())
    assert "feedback_links" in page and 'data-act="up"' not in page
    expired = [{"key": "user_score", "url": PRESIGNED, "expires_at": "2001-01-01T00:00:00+00:00"}]
    assert "expired" in review_page.review_html([recent_run(feedback_urls=expired)], {}, time.time())


def test_settings_page_masks_secrets(tmp_path):
    runtime = make_runtime(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    text = env_html(runtime.settings, runtime.store.scrub) + config_yaml(runtime.settings, runtime.store.scrub)
    assert all(secret not in text for secret in SECRETS)
    assert "set (value hidden)" in text and "acme/feedback" in text


# ---------------------------------------------------------------- the app over HTTP
class App:
    def __init__(self, runtime, ui, base: str) -> None:
        self.runtime, self.ui, self.base = runtime, ui, base

    def index(self, api_name: str) -> int:
        """Function indexes are no secret: an open app lists them in /config; they are stable per build."""
        return next(i for i, fn in self.ui.fns.items() if fn.api_name == api_name)

    def call(self, api_name: str, data: list, event_data: Any = None, headers: dict | None = None) -> dict:
        """What a script can do without the page: join the queue for any function, then read its outcome."""
        session = uuid.uuid4().hex
        joined = requests.post(self.base + "/gradio_api/queue/join", headers=headers or {}, timeout=10,
                               json={"data": data, "fn_index": self.index(api_name), "session_hash": session,
                                     "event_data": event_data, "trigger_id": None})
        if joined.status_code != 200:
            return {"status": joined.status_code, "success": False, "text": joined.text}
        with requests.get(self.base + "/gradio_api/queue/data", params={"session_hash": session},
                          headers=headers or {}, stream=True, timeout=20) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith(b"data:") else {}
                if message.get("msg") == "process_completed":
                    return {"status": 200, "success": message["success"], "text": json.dumps(message)}
        raise AssertionError("the queue stream ended without a result")

    def call_by_name(self, api_name: str, data: list) -> str:
        """The other door: `/gradio_api/call/<name>` then its event stream."""
        posted = requests.post(f"{self.base}/gradio_api/call/{api_name}", json={"data": data}, timeout=10)
        if posted.status_code != 200:
            return f"HTTP {posted.status_code}"
        event = posted.json()["event_id"]
        return requests.get(f"{self.base}/gradio_api/call/{api_name}/{event}", timeout=20).text


def launch(runtime, host: str, share: bool = False) -> App:
    """Listens on loopback, but decides access as if it listened on `host` (how the app would be exposed)."""
    launched = launch_in_process(runtime, host, share)
    return App(runtime, launched.ui, launched.base)


@pytest.fixture(scope="module")
def local_app(tmp_path_factory):
    app = launch(make_runtime(tmp_path_factory.mktemp("local")), "127.0.0.1")
    yield app
    app.ui.close()


@pytest.fixture(scope="module")
def closed_app(tmp_path_factory):
    """Reachable from other machines with no BRIDGE_ADMIN_PASSWORD: the Overview only."""
    runtime = make_runtime(tmp_path_factory.mktemp("closed"))
    app = launch(runtime, "0.0.0.0")
    app.marked = runtime.store.enqueue("experiment", "marked", {"repo": MARKER, "note": HF}, subject=MARKER)[0]
    yield app
    app.ui.close()


def test_every_handler_is_private_and_checks_the_caller(local_app):
    """Hiding is not protection: every registered function must take the caller and decide on the server."""
    public = {"set_live"}  # toggles this tab's own refresh timer; reads nothing
    for block_fn in local_app.ui.fns.values():
        assert block_fn.api_visibility == "private", block_fn.name
        if block_fn.fn is None or block_fn.name.rstrip("_0123456789") in public:
            continue
        hints = {p.annotation for p in inspect.signature(block_fn.fn).parameters.values()}
        assert {"gr.Request", "gr.OAuthProfile | None"} <= hints, f"{block_fn.name} does not authorise its caller"


def test_local_app_runs_forms_and_shows_field_errors(local_app):
    store = local_app.runtime.store
    before = store.counts()["queued"]
    bad = local_app.call("submit_experiment", ["not a repo", "dataset", "main", "auto", ""])
    assert bad["success"] and "not a repo id" in bad["text"] and store.counts()["queued"] == before
    empty_repo = local_app.call("submit_experiment", ["", "dataset", "main", "auto", ""])
    assert "Enter a repo id like owner/name" in empty_repo["text"] and "&#x27;&#x27;" not in empty_repo["text"]
    good = local_app.call("submit_experiment", ["acme/demo-evals", "dataset", "#3", "lm-eval", "a.jsonl,\nb.csv"])
    assert good["success"] and "Queued job" in good["text"]
    queued = store.list(kind="experiment", limit=1)[0]
    assert queued.payload == {"repo": "acme/demo-evals", "repo_type": "dataset", "revision": "#3", "all_files": True,
                              "files": ["a.jsonl", "b.csv"], "format": "lm-eval"} and queued.trigger == "manual"
    bad_filter = local_app.call("submit_backfill", ["acme/feedback", "support-bot", "eq(name, ", "", ""])
    assert "LangSmith filter syntax" in bad_filter["text"]
    window = local_app.call("submit_backfill", ["acme/feedback", "support-bot", "", "2026-11-02", "2026-11-01"])
    assert "end of the window is before its start" in window["text"]
    backfill = local_app.call("submit_backfill", ["acme/feedback", "support-bot", 'eq(name, "x")', "", ""])
    assert backfill["success"] and store.list(kind="backfill", limit=1)[0].payload["filter"] == 'eq(name, "x")'


def test_local_app_retries_and_cancels(local_app):
    store = local_app.runtime.store
    queued = store.enqueue("experiment", "to-cancel", {"repo": "acme/x"})[0]
    assert "cancelled" in local_app.call("cancel_job", [queued.id])["text"]
    assert store.get(queued.id).state == "cancelled"
    assert "queued again" in local_app.call("retry_job", [queued.id])["text"]
    assert store.get(queued.id).state == "queued"
    refused = local_app.call("retry_job", [queued.id])
    assert "only failed, dead, cancelled jobs can be retried" in refused["text"]
    shown = local_app.call("show_job", [queued.id])
    assert shown["success"] and "acme/x" in shown["text"]


def test_local_app_sends_feedback_through_a_job_without_exposing_the_link(local_app):
    runtime = local_app.runtime
    run = recent_run()
    row = {k: v for k, v in run.items() if k != "repo"}
    runtime.ledger.remember_recent("acme/feedback", [{"run_id": run["run_id"], "rows": json.dumps({"runs": [row]})}])
    listed = local_app.call("list_runs", [])
    assert "Paris" in listed["text"] and PRESIGNED not in listed["text"]
    event = {"index": run["run_id"],
             "value": {"repo": "acme/feedback", "act": "up", "key": "user_score", "comment": ""}}
    rated = local_app.call("rate_run", [], event_data=event)
    assert rated["success"] and "queued as job" in rated["text"] and PRESIGNED not in rated["text"]
    sent = runtime.store.list(kind="feedback", limit=1)[0]
    # the job names the token (a row exported before the feedback page carried the presigned URL itself)
    assert sent.payload["token_id"] == "0b7f4c3e-presigned" and "url" not in sent.payload
    assert sent.payload["score"] == 1.0 and sent.trigger == "manual"
    forged = {"index": run["run_id"], "value": {"repo": "acme/other", "act": "up", "key": "user_score"}}
    assert "no longer in the recent list" in local_app.call("rate_run", [], event_data=forged)["text"]


def test_local_app_replays_stored_deliveries(local_app):
    from hub_payloads import content_push

    store = local_app.runtime.store
    body = content_push(repo="acme/replay-evals", refs=[{"ref": "refs/heads/main", "oldSha": None, "newSha": "e" * 40}])
    from bridge.routing import JobSpec

    # A stored body (ignored deliveries keep none): a delivery whose job a person wants to run again.
    store.record_delivery("hub", json.dumps(body), [JobSpec("experiment", "first-try", {"repo": "acme/replay-evals"},
                                                            "acme/replay-evals")], reason="before the rule existed")
    delivery = store.deliveries(limit=1)[0]["id"]
    choices = local_app.call("load_choices", [])
    assert f"#{delivery}" in choices["text"] and "before the rule existed" in choices["text"]
    assert "acme/feedback" in choices["text"]  # the back-fill target list
    assert "support-bot" in local_app.call("prefill", ["acme/feedback"])["text"]  # from its backfill: entry
    replayed = local_app.call("replay", [delivery])
    assert replayed["success"] and "Queued job" in replayed["text"]
    job = store.list(kind="experiment", limit=1)[0]
    assert job.payload["repo"] == "acme/replay-evals" and job.trigger == "manual"
    missing = local_app.call("replay", [99999])
    assert "no longer stored" in missing["text"]


ACTIONS = [
    ("submit_experiment", ["acme/demo-evals", "dataset", "main", "auto", ""], None),
    ("submit_backfill", ["acme/feedback", "support-bot", "", "", ""], None),
    ("replay", [1], None),
    ("retry_job", [1], None),
    ("cancel_job", [1], None),
    ("rate_run", [], {"index": "r", "value": {"repo": "acme/feedback", "act": "up", "key": "user_score"}}),
    ("check_hub", [], None),
    ("check_langsmith", [], None),
    ("rebuild_scores", [], None),
]
READS = [
    ("show_job", [1], None),
    ("pick_job", [], {"index": 1, "value": "1"}),
    ("list_jobs", ["all", "all", "all", 1, 2], None),
    ("filter_jobs", ["all", "all", "all", 1], None),
    ("older_jobs", ["all", "all", "all", 1, 2], None),
    ("tick", ["all", "all", "all", 1, 2, {}], None),
    ("load_experiments", [], None),
    ("refresh_deliveries", [], None),
    ("list_runs", [], None),
    ("load_settings", [], None),
    ("load_choices", [], None),
    ("prefill", ["acme/feedback"], None),
]


@pytest.mark.parametrize("api_name, data, event", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_unauthorised_callers_cannot_act_through_the_api(closed_app, api_name, data, event):
    store = closed_app.runtime.store
    before = [(j.id, j.state) for j in store.list(limit=1000)]
    answer = closed_app.call(api_name, data, event_data=event)
    assert not answer["success"] and "BRIDGE_ADMIN_PASSWORD is not set" in answer["text"]
    assert [(j.id, j.state) for j in store.list(limit=1000)] == before


@pytest.mark.parametrize("api_name, data, event", READS, ids=[r[0] for r in READS])
def test_unauthorised_callers_cannot_read_jobs_through_the_api(closed_app, api_name, data, event):
    answer = closed_app.call(api_name, [closed_app.marked.id if d == 1 else d for d in data], event_data=event)
    assert answer["success"], answer  # answered, with a refusal instead of the data
    assert MARKER not in answer["text"] and HF not in answer["text"] and "support-bot" not in answer["text"]
    if api_name not in ("prefill", "refresh_deliveries"):  # these leave their fields untouched
        assert "BRIDGE_ADMIN_PASSWORD is not set" in answer["text"]


def test_unauthorised_callers_cannot_use_the_call_route_either(closed_app):
    store = closed_app.runtime.store
    before = store.counts()
    text = closed_app.call_by_name("submit_experiment", ["acme/demo-evals", "dataset", "main", "auto", ""])
    assert "BRIDGE_ADMIN_PASSWORD" in text or text.startswith("HTTP 4")
    assert store.counts() == before
    assert MARKER not in closed_app.call_by_name("show_job", [closed_app.marked.id])


def test_closed_app_still_serves_the_overview_webhooks_and_health(closed_app):
    overview = closed_app.call("load_overview", [])
    assert overview["success"] and "/webhooks/hub" in overview["text"] and HF not in overview["text"]
    assert "LangSmith rules" in overview["text"]  # the Wiring panel, open to everybody in its short form
    assert "Overview only" in closed_app.call("who_is_here", [])["text"]
    assert requests.get(closed_app.base + "/healthz", timeout=10).status_code == 200
    assert requests.post(closed_app.base + "/webhooks/hub", data=b"{}", timeout=10).status_code == 401


# ---------------------------------------------------------------- password and OAuth, end to end
def test_password_mode_requires_gradio_login(tmp_path):
    app = launch(make_runtime(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD), "0.0.0.0")
    try:
        store = app.runtime.store
        assert app.call("submit_experiment", ["acme/a-evals", "dataset", "main", "auto", ""])["status"] == 401
        wrong = requests.post(app.base + "/login", data={"username": "admin", "password": "nope"}, timeout=10)
        assert wrong.status_code >= 400
        login = requests.post(app.base + "/login", data={"username": "admin", "password": PASSWORD}, timeout=10)
        # The cookie is marked Secure, which requests keeps but will not send over http: send it by hand.
        cookie = {k: v for k, v in login.cookies.get_dict().items() if k.startswith("access-token")}
        assert cookie
        signed = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookie.items())}
        answer = app.call("submit_experiment", ["acme/a-evals", "dataset", "main", "auto", ""], headers=signed)
        assert answer["success"] and store.list(kind="experiment", limit=1)[0].payload["repo"] == "acme/a-evals"
        assert requests.post(app.base + "/webhooks/hub", data=b"{}", timeout=10).status_code == 401  # not a login page
    finally:
        app.ui.close()


@pytest.fixture
def oauth_app(tmp_path, monkeypatch):
    """A Space-like app. Off a Space gradio fakes the HF login with this userinfo; tests change who logs in."""
    import gradio.oauth

    userinfo = profile("nobody")
    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: {
        "access_token": "mock", "token_type": "bearer", "expires_in": 3600, "scope": "openid profile",
        "expires_at": int(time.time()) + 3600, "userinfo": userinfo})
    app = launch(make_runtime(tmp_path, SPACE_ID="acme/bridge", BRIDGE_ADMINS="alice, acme-labs"), "0.0.0.0")
    app.userinfo = userinfo
    yield app
    app.ui.close()


def login_as(app: App, info: dict) -> dict:
    app.userinfo.clear()
    app.userinfo.update(info)
    start = requests.get(app.base + "/login/huggingface", allow_redirects=False, timeout=10)
    callback = requests.get(app.base + start.headers["location"], allow_redirects=False, timeout=10)
    session = callback.cookies.get("session")  # Secure: sent by hand over http
    assert session, callback.headers
    return {"Cookie": f"session={session}"}


def test_oauth_mode_admits_only_listed_users_and_organisations(oauth_app):
    store = oauth_app.runtime.store
    form = ["acme/o-evals", "dataset", "main", "auto", ""]
    anonymous = oauth_app.call("submit_experiment", form)
    assert not anonymous["success"] and "Sign in with Hugging Face" in anonymous["text"]
    public = oauth_app.call("load_overview", [])
    assert public["success"] and "BRIDGE_ADMINS" in public["text"] and "alice" not in public["text"]
    outsider = oauth_app.call("submit_experiment", form, headers=login_as(oauth_app, profile("mallory", "evil")))
    assert not outsider["success"] and "mallory is not in BRIDGE_ADMINS" in outsider["text"]
    assert store.list(kind="experiment") == []
    member = login_as(oauth_app, profile("bob", "acme-labs"))
    assert oauth_app.call("submit_experiment", form, headers=member)["success"]
    assert "bob" in oauth_app.call("who_is_here", [], headers=member)["text"]
    assert len(store.list(kind="experiment")) == 1
