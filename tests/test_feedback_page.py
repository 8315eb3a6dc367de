"""The bridge's feedback page, `/feedback/<token id>`, on the real app over loopback, with the sandbox LangSmith:
a GET shows the run and records nothing, a POST records through the presigned token (a `feedback` job), expired
and unknown links say so, and run text is escaped."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest
import requests

from apps import launch_in_process
from conftest import run_jobs
from test_flow_exports import RULE, chat_run, config, deliver, read_rows

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def exported(hub, smith, make_bridge):
    """One run exported with a feedback link whose page is served by the launched app."""
    runtime = make_bridge(config(presets="[runs]", extra="    feedback_links: {keys: [user_score], expires_hours: 24}"))
    app = launch_in_process(runtime)
    runtime.reachable_url = app.base  # the URL people outside can open: feedback links point there
    run = smith.add_run(chat_run(0, answer=f"Answer with {HOSTILE}"))
    deliver(runtime, smith.webhook_payload(RULE, [run["id"]]))
    run_jobs(runtime)
    [row] = read_rows(hub)
    [link] = row["feedback_urls"]
    yield {"runtime": runtime, "run_id": run["id"], "url": link["url"], "token": link["url"].rsplit("/", 1)[1]}
    app.close()


def test_get_shows_the_run_and_records_nothing(exported, smith):
    page = requests.get(exported["url"], timeout=10)
    assert page.status_code == 200 and "question 0" in page.text and "Answer with" in page.text
    assert 'name="rating" value="good"' in page.text and page.headers["cache-control"] == "no-store"
    assert "noindex" in page.headers["x-robots-tag"]
    requests.get(exported["url"] + "?score=1&comment=scanner", timeout=10)  # what a link scanner would try
    assert smith.feedback_for(exported["run_id"]) == []
    assert smith.recorder.count("GET", r"/feedback/tokens/") == 0
    assert exported["runtime"].store.list(kind="feedback") == []


def test_run_text_is_escaped(exported):
    page = requests.get(exported["url"], timeout=10).text
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_post_records_feedback_through_the_token(exported, smith):
    runtime, url, token = exported["runtime"], exported["url"], exported["token"]
    sent = requests.post(url, data={"token": token, "rating": "bad", "comment": "Rude <b>reply</b>",
                                    "correction": "Sorry, here is the right answer."}, allow_redirects=False,
                         timeout=10)
    assert sent.status_code == 303 and re.fullmatch(rf"{token}\?job=\d+", sent.headers["location"])
    waiting = requests.get(urljoin(url, sent.headers["location"]), timeout=10).text
    assert "Sending your feedback" in waiting
    [job, *after] = run_jobs(runtime)
    assert job.kind == "feedback" and job.state == "succeeded", job.last_error
    # The bridge knows of the change at once: the run's rows are rewritten by the flush the rating scheduled.
    assert job.result["refreshed"] == 1 and [(j.kind, j.result["runs_rewritten"]) for j in after] == [("flush", 1)]
    assert "url" not in job.payload  # the presigned URL stays in the state dir, out of job views
    [feedback] = smith.feedback_for(exported["run_id"])
    assert (feedback["key"], feedback["score"], feedback["comment"]) == ("user_score", 0, "Rude <b>reply</b>")
    assert feedback["correction"] == {"role": "assistant", "content": "Sorry, here is the right answer."}
    done = requests.get(urljoin(url, sent.headers["location"]), timeout=10).text
    assert "your feedback is recorded" in done


def test_post_needs_the_token_in_the_form_and_something_to_send(exported):
    runtime, url, token = exported["runtime"], exported["url"], exported["token"]
    wrong = requests.post(url, data={"token": "another", "rating": "good"}, allow_redirects=False, timeout=10)
    assert wrong.status_code == 400 and "does not belong to this feedback link" in wrong.text
    empty = requests.post(url, data={"token": token, "rating": "none"}, allow_redirects=False, timeout=10)
    assert empty.status_code == 400 and "Nothing to send" in empty.text
    assert runtime.store.list(kind="feedback") == []


def test_expired_link_says_so_and_takes_nothing(exported, smith):
    runtime, url, token = exported["runtime"], exported["url"], exported["token"]
    with runtime.store.db.tx() as conn:
        conn.execute("UPDATE feedback_links SET expires_at = '2020-01-02T03:04:00+00:00' WHERE token_id = ?", (token,))
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "expired on 2020-01-02 03:04 UTC" in page.text and "<form" not in page.text
    refused = requests.post(url, data={"token": token, "rating": "good"}, allow_redirects=False, timeout=10)
    assert refused.status_code == 410 and "expired" in refused.text
    assert runtime.store.list(kind="feedback") == [] and smith.feedback_for(exported["run_id"]) == []


def test_token_that_expired_in_langsmith_fails_in_plain_words(exported, smith):
    runtime, url, token = exported["runtime"], exported["url"], exported["token"]
    smith.advance_clock(25 * 3600)  # LangSmith's clock passed the expiry; the bridge's not yet
    sent = requests.post(url, data={"token": token, "rating": "good"}, allow_redirects=False, timeout=10)
    [job] = run_jobs(runtime)
    assert job.state in ("failed", "dead") and "LangSmith refused this feedback link: it has expired" in job.last_error
    page = requests.get(urljoin(url, sent.headers["location"]), timeout=10).text
    assert "could not be recorded" in page


def test_unknown_link(exported):
    page = requests.get(exported["url"].rsplit("/", 1)[0] + "/not-a-token", timeout=10)
    assert page.status_code == 404 and "not known here" in page.text
