"""Issue 16's pieces without a browser: what the Overview says about deliveries, the charts' data from the store,
plain-words upstream errors, jobs pages, the Experiments page's scores (kept, and recovered from LangSmith) and
pages free of emoji. Upstream calls go to the emulators through the real SDKs."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest
import requests
from langsmith import Client

from conftest import LS_KEY, run_jobs
from hub_payloads import content_push
from bridge import activity, scores
from bridge.errors import UpstreamError
from bridge.flows import scores as scores_flow
from bridge.formats.pr_comment import marker
from bridge.routing import JobSpec
from bridge.ui import experiments as experiments_page
from bridge.ui import jobs as jobs_page
from bridge.ui import overview, review, run
from bridge.ui.html import plural

CONFIG = """
experiments:
  - repo: "acme/*-evals"
exports:
  - rule_id: "rule-1"
    repo: "acme/feedback"
"""
# Pictographs (U+1F000-1FAFF), the dingbat / misc-symbol emoji (U+2600-27BF) and the emoji presentation selector.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")


# ---------------------------------------------------------------- last deliveries
def test_last_deliveries_show_what_did_something_and_label_the_bridges_echoes(make_bridge):
    from bridge.events import parse_hub_delivery
    from bridge.routing import route_hub

    runtime = make_bridge(CONFIG)
    store = runtime.store

    def arrive(body: dict, own: tuple = ()) -> None:  # what the web handler stores (ignored: the reason, no body)
        routed = route_hub(parse_hub_delivery(body), runtime.settings.config, own)
        store.record_delivery("hub", json.dumps(body), None, reason=routed.reason)

    _, ids = store.record_delivery("hub", json.dumps(content_push(repo="acme/a-evals")),
                                   [JobSpec("experiment", "e:1", {"repo": "acme/a-evals"}, "acme/a-evals")])
    store.cancel(ids[0])
    own_commit = content_push(repo="acme/feedback")
    arrive(own_commit, own=(own_commit["updatedRefs"][0]["newSha"],))
    page = overview.activity_html(runtime, detailed=True)
    assert f"queued job #{ids[0]}" in page and "cancelled" in page  # the job's state now, not "queued"
    assert "the bridge&#x27;s own commit to acme/feedback (ignored, as it should be)" in page
    assert "no experiments rule matches" not in page  # an echo is not shown as a failure

    comment = {"event": {"action": "create", "scope": "discussion.comment"},
               "repo": {"type": "dataset", "name": "acme/a-evals"},
               "comment": {"content": marker("a" * 40) + "\n### Eval results"}}
    arrive(comment)
    page = overview.activity_html(runtime, detailed=True)
    assert "the bridge&#x27;s own PR comment on acme/a-evals" in page
    arrive({**comment, "comment": {"content": "Looks good to me"}})
    assert "is not watched" in overview.activity_html(runtime, detailed=True)  # not ours: shown as it is
    assert not any(d["has_body"] for d in store.deliveries() if d["outcome"] == "ignored")


def test_setup_facts_count_in_plain_words(make_bridge):
    assert plural(1, "experiments rule") == "1 experiments rule" and plural(2, "exports target") == "2 exports targets"
    notes = overview.setup_notes(make_bridge(CONFIG))
    assert "1 experiments rule, 1 exports target" in notes and "(s)" not in notes


def test_connection_checks_name_their_service(make_bridge):
    runtime = make_bridge(CONFIG)
    assert "<b>Hub</b>: connected as acme" in overview.check("Hub", runtime.hub.check)
    failed = overview.check("LangSmith", lambda: runtime.smith.project_id("nope"))
    assert "<b>LangSmith</b>: LangSmith has no project named &#x27;nope&#x27;" in failed


# ---------------------------------------------------------------- plain words
def test_langsmith_errors_are_plain_words_never_class_names(make_bridge):
    runtime = make_bridge(CONFIG)
    with pytest.raises(UpstreamError) as missing:
        runtime.smith.project_id("no-such-project")
    assert str(missing.value) == "LangSmith has no project named 'no-such-project'" and missing.value.status == 404
    refused = make_bridge(CONFIG, LANGSMITH_API_KEY="lsv2_wrong_key")
    with pytest.raises(UpstreamError) as denied:
        refused.smith.check()
    assert "Error" not in str(denied.value) and "lsv2_wrong_key" not in str(denied.value)


def test_a_backfill_of_a_missing_project_fails_with_a_sentence(make_bridge):
    from bridge import actions

    runtime = make_bridge(CONFIG)
    job = actions.submit_backfill(runtime.store, runtime.settings.config, "acme/feedback", "no-such-project")
    run_jobs(runtime)
    assert runtime.store.get(job.id).last_error == "LangSmith has no project named 'no-such-project'"


def test_hub_connection_failures_are_plain_words(make_bridge):
    runtime = make_bridge(CONFIG, HF_ENDPOINT="http://127.0.0.1:9")
    with pytest.raises(UpstreamError) as failed:
        runtime.hub.check()
    assert "the connection failed" in str(failed.value) and "Error" not in str(failed.value)


# ---------------------------------------------------------------- jobs pages
def test_jobs_come_fifty_a_page_with_the_count(make_bridge):
    runtime = make_bridge(CONFIG)
    for i in range(120):
        runtime.store.enqueue("experiment", f"k{i}", {"repo": "acme/a-evals"}, subject=f"s{i}")
    first, total = runtime.store.list(limit=jobs_page.PAGE_SIZE), runtime.store.count()
    third = runtime.store.list(offset=100, limit=jobs_page.PAGE_SIZE)
    assert total == 120 and len(first) == 50 and first[0].id == 120 and [j.id for j in third][-1] == 1
    table = jobs_page.jobs_table(third, None, time.time(), False, 100, total)
    assert "Jobs 101–120 of 120" in table
    assert runtime.store.count(state="failed") == 0 and runtime.store.count(state="queued") == 120


def test_run_page_shows_the_jobs_of_a_delivery_in_their_current_state(make_bridge):
    runtime = make_bridge(CONFIG)
    store = runtime.store
    _, ids = store.record_delivery("hub", "{}", [JobSpec("experiment", "e:9", {}, "x")])
    store.cancel(ids[0])
    page = run.deliveries_html(store.deliveries(limit=5), store)
    assert f"job #{ids[0]}" in page and "st-cancelled" in page and "Jobs now" in page


# ---------------------------------------------------------------- charts' data
def test_ack_latency_is_stored_per_delivery_and_summarised_per_hour(make_bridge):
    runtime = make_bridge(CONFIG)
    for ms in range(1, 101):
        runtime.acks.record("hub", ms / 1000)
    rows = runtime.acks.per_hour(time.time() - 3600)
    assert rows == [{"hour": activity.hour_of(rows[0]["hour"]), "source": "hub", "p50": 0.05, "p99": 0.099,
                     "deliveries": 100}]
    assert activity.percentile([3.0], 99) == 3.0


def test_webhook_answers_feed_the_latency_chart(tmp_path, make_bridge):
    from apps import launch_in_process

    runtime = make_bridge(CONFIG, WEBHOOK_SECRET="s3cret")
    app = launch_in_process(runtime)
    try:
        answer = requests.post(app.base + "/webhooks/hub", json=content_push(repo="acme/a-evals"),
                               headers={"X-Webhook-Secret": "s3cret"}, timeout=10)
        assert answer.status_code == 202
        runtime.acks.flush()
        latency = runtime.acks.per_hour(time.time() - 3600)
        assert latency[0]["source"] == "hub" and latency[0]["deliveries"] == 1 and latency[0]["p99"] < 5
        deliveries, runs, ms = overview.chart_frames(runtime, time.time())
        assert deliveries.to_dict("records")[0]["series"] == "Hub · queued" and ms["series"].tolist() == [
            "Hub p50", "Hub p99"]
    finally:
        app.close()


def test_runs_exported_per_hour_come_from_flush_results(make_bridge):
    runtime = make_bridge(CONFIG)
    store = runtime.store
    flush = store.enqueue("flush", "f:1", {"repo": "acme/feedback"})[0]
    store.succeed(store.claim(), {"repo": "acme/feedback", "runs_committed": 7, "commits": 1})
    assert store.get(flush.id).state == "succeeded"
    rows = activity.runs_exported_per_hour(store.db, time.time() - 3600)
    assert [(r["repo"], r["runs"]) for r in rows] == [("acme/feedback", 7)]


# ---------------------------------------------------------------- experiments page
def test_headline_prefers_the_usual_metric_names():
    assert scores.headline({"rouge": 0.2, "exact_match,none": 0.5}) == ("exact_match,none", 0.5)
    assert scores.headline({"b": 1, "a": 2}) == ("a", 2.0)
    assert scores.headline({"note": "x"}) == (None, None)


def score(**fields) -> scores.Score:
    base = dict(experiment_id="e1", experiment="m@abc", repo="acme/a-evals", task="qa", model="m",
                ref="refs/heads/main", pr=None, revision="a" * 40, metric="acc", score=0.5, scores={"acc": 0.5},
                url="https://smith/o/t/datasets/d/compare?selectedSessions=e1", at=1_700_000_000.0)
    return scores.Score(**{**base, **fields})


def test_experiments_chart_draws_main_as_a_line_and_prs_as_linked_points():
    book = [score(), score(experiment_id="e2", revision="b" * 40, score=0.7, at=1_700_003_600.0),
            score(experiment_id="e3", ref="refs/pr/4", pr=4, score=0.9, at=1_700_007_200.0,
                  url="https://smith/x?selectedSessions=e3")]
    fig = experiments_page.figure(book)
    main, prs = fig.data
    assert main.mode == "lines+markers+text" and list(main.y) == [0.5, 0.7]
    assert prs.mode == "markers+text" and list(prs.y) == [0.9]
    assert prs.text[0] == '<a href="https://smith/x?selectedSessions=e3" target="_blank">PR #4</a>'
    table = experiments_page.latest_table(book)
    assert "0.7" in table and "PR #4" in table and "+0.2" in table
    assert "No experiments yet" in experiments_page.latest_table([])


def test_experiment_jobs_keep_scores_and_a_wipe_recovers_them_from_langsmith(make_bridge, hub, smith, tmp_path):
    from bridge.sandbox.demo import QUESTIONS, lm_eval_files
    from datetime import datetime, timezone

    hub.create_repo("acme/a-evals", repo_type="dataset")
    runtime = make_bridge(CONFIG)
    day = datetime(2026, 11, 20, tzinfo=timezone.utc)
    hub.commit("acme/a-evals", lm_eval_files(day, "acme/model", QUESTIONS), message="results", author="acme")
    from bridge import actions

    actions.submit_experiment(runtime.store, "acme/a-evals")
    run_jobs(runtime)
    kept = runtime.scores.all()
    assert len(kept) == 1 and kept[0].is_main and kept[0].metric == "exact_match" and kept[0].task == "demo_qa"
    assert kept[0].at == day.timestamp() and "selectedSessions=" in kept[0].url

    # a foreign experiment (no bridge metadata) is left out of the recovery
    client = Client(api_url=smith.url, api_key=LS_KEY, auto_batch_tracing=False)
    dataset = client.create_dataset("someone-elses")
    client.create_project("not-ours", reference_dataset_id=dataset.id, metadata={"model": "x"})
    wiped = make_bridge(CONFIG, state=tmp_path / "wiped")
    assert wiped.scores.empty() and scores_flow.schedule_at_start(wiped) is not None
    run_jobs(wiped)
    recovered = wiped.scores.all()
    assert [(s.experiment_id, s.score, s.metric, s.repo, s.revision, s.pr) for s in recovered] == [
        (k.experiment_id, k.score, k.metric, k.repo, k.revision, k.pr) for k in kept]
    assert scores_flow.schedule_at_start(wiped) is None  # not again once the table has rows


# ---------------------------------------------------------------- no colour emoji needed
def test_pages_do_not_depend_on_colour_emoji(make_bridge):
    runtime = make_bridge(CONFIG)
    from bridge.ui import config_page
    from bridge.ui import who_html
    from bridge import access

    run_ = {"repo": "acme/feedback", "run_id": "r1", "name": "Chat", "feedback": [],
            "feedback_urls": [{"key": "user_score", "url": "http://x", "expires_at": "2999-01-01T00:00:00+00:00"}]}
    texts = [overview.activity_html(runtime, True), overview.setup_notes(runtime),
             overview.credentials_html(runtime.settings), overview.HUB_TO_SMITH, overview.SMITH_TO_HUB,
             review.review_html([run_], {}, time.time()), config_page.problems_html(runtime),
             config_page.env_html(runtime.settings, runtime.store.scrub), run.error_updates(
                 {"repo": None}, run.FieldError("repo", "bad"))[0].value,
             who_html(access.Viewer("me", True), access.current_policy(runtime))]
    for text in texts:
        assert not EMOJI.search(text), EMOJI.findall(text)
    assert "Good</button>" in texts[5] and "Bad</button>" in texts[5]


def test_the_jobs_page_turns_pages_through_its_handlers(make_bridge):
    from test_ui import launch

    runtime = make_bridge(CONFIG)
    for i in range(120):
        runtime.store.enqueue("experiment", f"k{i}", {"repo": "acme/a-evals"}, subject=f"s{i}")
    app = launch(runtime, "127.0.0.1")
    try:
        filters = ["all", "all", "all", ""]

        def page_line(answer: dict) -> str:
            return re.search(r"Jobs (\d+)\\u2013(\d+) of (\d+)", answer["text"]).group(0).replace("\\u2013", "-")
        assert page_line(app.call("list_jobs", [*filters, 1])) == "Jobs 1-50 of 120"
        older = app.call("older_jobs", [*filters, 2])
        assert page_line(older) == "Jobs 101-120 of 120" and ">s0<" in older["text"] and ">s30<" not in older["text"]
        assert page_line(app.call("older_jobs", [*filters, 3])) == "Jobs 101-120 of 120"  # no page after the last
        assert page_line(app.call("newer_jobs", [*filters, 3])) == "Jobs 51-100 of 120"
        assert page_line(app.call("filter_jobs", filters)) == "Jobs 1-50 of 120"  # a filter goes back to page 1
    finally:
        app.ui.close()
