"""Pure routing: which deliveries become which jobs. No I/O."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.events import PayloadError, parse_hub_delivery, parse_rule_delivery, read_rule_delivery
from bridge.routing import EXPERIMENT, EXPORT, CancelQueued, Ignored, export_key, route_hub, route_rule
from bridge.settings import parse_config
from hub_payloads import SHA_A, SHA_B, content_push, discussion_comment, new_pr

CONFIG = parse_config({
    "experiments": [{"repo": "acme/*-evals", "branches": ["main", "release"]},
                    {"repo": "acme/no-prs", "pull_requests": False}],
    "exports": [{"rule_id": "rule-1", "repo": "acme/feedback"}],
}, "test")


def test_parse_keeps_head_sha_and_raw():
    body = content_push()
    delivery = parse_hub_delivery(body)
    assert delivery.repo.head_sha == SHA_B
    assert delivery.updated_refs[0].old_sha == SHA_A
    assert delivery.raw is body


@pytest.mark.parametrize("mutate", [
    lambda b: b["event"].update(action="transfer"),
    lambda b: b["repo"].update(type="bucket"),
    lambda b: b["webhook"].update(version=4),
    lambda b: b["event"].update(scope="repo.content.dois"),
    lambda b: b.update(brandNewField={"x": 1}),
    lambda b: b["repo"].pop("headSha"),
], ids=["unknown-action", "unknown-repo-type", "future-version", "narrower-scope", "unknown-field", "no-headSha"])
def test_tolerant_parse(mutate):
    body = content_push()
    mutate(body)
    parse_hub_delivery(body)


@pytest.mark.parametrize("body, missing", [
    ({"repo": {}}, "event"), ({"event": {}}, "repo"), ({}, "event, repo"),
], ids=["no-event", "no-repo", "neither"])
def test_parse_names_missing_hub_fields(body, missing):
    with pytest.raises(PayloadError, match=f"missing required field\\(s\\): {missing}"):
        parse_hub_delivery(body)


def test_parse_names_missing_rule_fields():
    with pytest.raises(PayloadError, match="rule_id, runs"):
        parse_rule_delivery({"start_time": "x"})
    with pytest.raises(PayloadError, match="expected a JSON object"):
        parse_rule_delivery([1, 2])


@pytest.mark.parametrize("body, expected", [
    (content_push(), [("refs/heads/main", None)]),
    (content_push(refs=[{"ref": "refs/heads/release", "oldSha": SHA_A, "newSha": SHA_B}]), [("refs/heads/release", None)]),
    (new_pr(3), [("refs/pr/3", 3)]),
    (content_push(refs=[{"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": SHA_B},
                        {"ref": "refs/tags/v1", "oldSha": None, "newSha": SHA_B}]), [("refs/heads/main", None)]),
], ids=["main", "watched-branch", "new-pr", "main-and-tag"])
def test_hub_jobs(body, expected):
    specs = route_hub(parse_hub_delivery(body), CONFIG)
    assert [(s.payload["ref"], s.payload["pr"]) for s in specs] == expected
    assert all(s.kind == EXPERIMENT and s.payload["sha"] == SHA_B for s in specs)
    assert specs[0].key == f"experiment:dataset/acme/llama-evals:{expected[0][0]}:{SHA_B}"


@pytest.mark.parametrize("body, reason", [
    (discussion_comment(), "scope 'discussion.comment' is not watched"),
    (content_push(repo="other/llama-evals"), "no experiments rule matches dataset 'other/llama-evals'"),
    (content_push(repo_type="model"), "no experiments rule matches model"),
    (content_push(refs=[{"ref": "refs/tags/v1", "oldSha": None, "newSha": SHA_B}]), "tags are not watched"),
    (content_push(refs=[{"ref": "refs/convert/parquet", "oldSha": None, "newSha": SHA_B}]), "conversion"),
    (content_push(refs=[{"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": None}]), "was deleted"),
    (content_push(refs=[{"ref": "refs/heads/dev", "oldSha": SHA_A, "newSha": SHA_B}]), "branch 'dev' is not watched"),
    (new_pr(2, repo="acme/no-prs"), "pull requests are not watched"),
    (content_push(refs=[]), "no updated refs"),
], ids=["comment-scope", "unmatched-repo", "unmatched-type", "tag", "convert", "deleted", "other-branch",
        "prs-off", "no-refs"])
def test_hub_ignored(body, reason):
    result = route_hub(parse_hub_delivery(body), CONFIG)
    assert isinstance(result, Ignored) and reason in result.reason


def test_own_commits_are_ignored():
    result = route_hub(parse_hub_delivery(content_push()), CONFIG, own_commits={SHA_B})
    assert isinstance(result, Ignored) and "commit the bridge made" in result.reason


def test_rule_routing_keys_by_rule_and_run_set():
    body = {"rule_id": "rule-1", "runs": [{"id": "r2"}, {"id": "r1"}, {"no": "id"}]}
    [spec] = route_rule(parse_rule_delivery(body), CONFIG)
    assert spec.kind == EXPORT and spec.payload is not None
    assert spec.key == export_key("rule-1", ["r1", "r2"], None)
    assert spec.key == route_rule(parse_rule_delivery({"rule_id": "rule-1", "runs": [{"id": "r1"}, {"id": "r2"}]}),
                                  CONFIG)[0].key
    assert spec.key != export_key("rule-1", ["r1"], None)


def test_rule_routing_ignores_unknown_rules_and_accepts_threads():
    assert isinstance(route_rule(parse_rule_delivery({"rule_id": "nope", "runs": [{"id": "a"}]}), CONFIG), Ignored)
    [spec] = route_rule(parse_rule_delivery({"rule_id": "rule-1", "runs": [], "threads": [{"id": "t"}]}), CONFIG)
    assert "1 thread" in spec.subject
    assert isinstance(route_rule(parse_rule_delivery({"rule_id": "rule-1", "runs": []}), CONFIG), Ignored)


# ---- the fast rule reader must agree with the full parse on everything it accepts

def _full_route(text: str):
    try:
        return route_rule(parse_rule_delivery(json.loads(text)), CONFIG)
    except (PayloadError, ValueError, RecursionError) as exc:
        return type(exc).__name__


def _fast_route(text: str):
    delivery = read_rule_delivery(text.encode("utf-8", "surrogatepass"))
    return None if delivery is None else route_rule(delivery, CONFIG)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                         max_size=3), max_leaves=8)
RUNS = st.lists(st.fixed_dictionaries({}, optional={"id": st.sampled_from(["r1", "r2", "", None, 7]) | JSON_VALUES,
                                                    "inputs": JSON_VALUES}) | JSON_VALUES, max_size=4)
BODIES = st.fixed_dictionaries({}, optional={
    "rule_id": st.sampled_from(["rule-1", "other"]) | JSON_VALUES, "runs": RUNS | JSON_VALUES,
    "threads": st.lists(JSON_VALUES, max_size=2) | JSON_VALUES, "start_time": st.sampled_from(["2026-11-21"]) | JSON_VALUES,
    "end_time": JSON_VALUES, "feedback_stats": JSON_VALUES}) | JSON_VALUES


@settings(max_examples=600, deadline=None)
@given(BODIES)
def test_fast_rule_reader_routes_like_the_full_parse(body):
    text = json.dumps(body)
    fast = _fast_route(text)
    assert fast is None or fast == _full_route(text)


@pytest.mark.parametrize("text", [
    '{"rule_id": "rule-1", "runs": [{"id": "a", "x": NaN}]}',
    '{"rule_id": "rule-1", "runs": [{"id": "a", "x": "\\ud800"}]}',
    '{"rule_id": "rule-1", "rule_id": 5, "runs": [{"id": "a"}]}',
    '{"rule_id": "rule-1", "runs": [{"id": "a"}, "b"]}',
    '{"rule_id": "rule-1", "runs": [{"id": "a"}]} trailing',
    '{"rule_id": "rule-1", "runs": [{"id": "a", "deep": ' + "[" * 5000 + "]" * 5000 + "}]}",
    '{"rule_id": "rule-1", "runs": [{"id": "a"}], "feedback_stats": []}',
], ids=["nan", "lone-surrogate", "duplicate-key", "run-not-object", "trailing-text", "deep-nesting", "stats-list"])
def test_fast_rule_reader_leaves_the_odd_cases_to_the_full_parse(text):
    assert _fast_route(text) is None


def test_fast_rule_reader_takes_a_real_delivery():
    text = json.dumps({"rule_id": "rule-1", "start_time": "2026-11-21T10:00:00", "end_time": None,
                       "runs": [{"id": "r1", "inputs": {"q": "hi"}}, {"id": "r2"}], "feedback_stats": {}})
    [spec] = _fast_route(text)
    assert spec == _full_route(text)[0]


def pr_status(status: str, repo: str = "acme/llama-evals", is_pr: bool = True) -> dict:
    body = discussion_comment()
    body["event"] = {"action": "update", "scope": "discussion"}
    body.pop("comment")
    body["repo"].update(name=repo)
    body["discussion"].update(num=7, status=status, isPullRequest=is_pr)
    return body


def test_a_closed_pull_request_withdraws_exactly_its_own_queued_jobs():
    routed = route_hub(parse_hub_delivery(pr_status("closed")), CONFIG)
    assert isinstance(routed, CancelQueued)
    assert routed.key_prefix == "experiment:dataset/acme/llama-evals:refs/pr/7:"  # not refs/pr/70
    assert routed.reason == "pull request #7 of acme/llama-evals was closed"


@pytest.mark.parametrize("body, reason", [
    (pr_status("merged"), "was merged: it is not commented again"),
    (pr_status("open"), "is open: nothing to do"),
    (pr_status("closed", is_pr=False), "only pull requests"),
    (pr_status("closed", repo="acme/no-prs"), "no experiments rule watches the pull requests"),
    (pr_status("closed", repo="other/x"), "no experiments rule watches the pull requests"),
], ids=["merged", "reopened", "discussion", "prs-not-watched", "no-rule"])
def test_other_discussion_events_are_ignored_with_the_reason(body, reason):
    routed = route_hub(parse_hub_delivery(body), CONFIG)
    assert isinstance(routed, Ignored) and reason in routed.reason
