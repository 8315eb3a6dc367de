"""Redaction of run and feedback text (bridge.formats.redact)."""

from __future__ import annotations

import time

import pytest

from bridge.errors import ConfigError
from bridge.formats.redact import Redactor

OPENAI = "sk-" + "a1B2" * 12
OPENAI_PROJECT = "sk-proj-" + "Xy_9-" * 20
HF = "hf_" + "AbCdEfGhIj" * 3 + "KlMn"
LANGSMITH = "lsv2_pt_" + "0123456789abcdef" * 2 + "_0123456789"
AWS = "AKIA" + "ABCDEFGHIJ234567"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
       "aFDrBz9vFqU4yrLP1xG+Ww==\n-----END RSA PRIVATE KEY-----")


@pytest.mark.parametrize("rules, text, expected, counts", [
    pytest.param(["secrets"], f"key={OPENAI};", "key=[REDACTED:openai_key];", {"openai_key": 1}, id="openai-key"),
    pytest.param(["secrets"], f"OPENAI_API_KEY={OPENAI_PROJECT}", "OPENAI_API_KEY=[REDACTED:openai_key]",
                 {"openai_key": 1}, id="openai-project-key"),
    pytest.param(["secrets"], f"token {HF} used", "token [REDACTED:hf_token] used", {"hf_token": 1}, id="hf-token"),
    pytest.param(["secrets"], f"LANGSMITH_API_KEY={LANGSMITH}", "LANGSMITH_API_KEY=[REDACTED:langsmith_key]",
                 {"langsmith_key": 1}, id="langsmith-key"),
    pytest.param(["secrets"], f"aws {AWS} here", "aws [REDACTED:aws_access_key] here", {"aws_access_key": 1},
                 id="aws-access-key"),
    pytest.param(["secrets"], f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:bearer_token]",
                 {"bearer_token": 1}, id="bearer-jwt"),
    pytest.param(["secrets"], f"authorization: bearer {OPENAI}", "authorization: bearer [REDACTED:bearer_token]",
                 {"bearer_token": 1, "openai_key": 0}, id="bearer-wins-over-vendor-key"),
    pytest.param(["secrets"], f"key:\n{PEM}\nend", "key:\n[REDACTED:private_key]\nend", {"private_key": 1},
                 id="pem-private-key"),
    pytest.param(["secrets"], "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAAS",
                 "[REDACTED:private_key]", {"private_key": 1}, id="truncated-pem"),
    pytest.param(["emails"], "mail jane.doe+x@mail.example.co.uk or BOB@EXAMPLE.COM.",
                 "mail [REDACTED:email] or [REDACTED:email].", {"email": 2}, id="emails"),
    pytest.param([{"pattern": r"ACME-\d{4}"}], "ticket ACME-1234 and ACME-99", "ticket [REDACTED:custom] and ACME-99",
                 {r"custom:ACME-\d{4}": 1}, id="custom-regex"),
    pytest.param([{"pattern": r"(?i)project\s+falcon", "name": "codename"}], "Project  Falcon ships",
                 "[REDACTED:codename] ships", {"codename": 1}, id="custom-named"),
    pytest.param(["secrets", "emails"], "sk-learn is a library; the bearer of news; user@localhost",
                 "sk-learn is a library; the bearer of news; user@localhost", {}, id="no-false-positives"),
])
def test_redaction_kinds(rules, text, expected, counts):
    redactor = Redactor(rules)
    assert redactor.apply(text) == expected
    assert {k: v for k, v in redactor.counts.items() if k in counts or v} == counts


def test_nested_structures_and_counts_accumulate():
    redactor = Redactor(["emails", "secrets"])
    value = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "I am ann@example.com"}]},
                     ("tuple", f"Bearer {JWT}")],
        "metadata": {"user": "bob@example.org", "n": 3, "ok": True, "none": None, "key": OPENAI},
    }
    out = redactor.apply(value)
    assert out["messages"][0]["content"][0]["text"] == "I am [REDACTED:email]"
    assert out["messages"][1] == ["tuple", "Bearer [REDACTED:bearer_token]"]
    assert out["metadata"] == {"user": "[REDACTED:email]", "n": 3, "ok": True, "none": None,
                               "key": "[REDACTED:openai_key]"}
    assert value["metadata"]["user"] == "bob@example.org"  # the input is not modified
    redactor.apply("carol@example.net")
    assert redactor.counts["email"] == 3 and redactor.counts["bearer_token"] == 1 and redactor.counts["openai_key"] == 1


def test_redacting_twice_finds_nothing_new():
    redactor = Redactor(["emails", "secrets", {"pattern": "secret-\\w+"}])
    once = redactor.apply(f"a@b.io {OPENAI} {PEM} Bearer {JWT} secret-sauce")
    before = dict(redactor.counts)
    assert redactor.apply(once) == once and redactor.counts == before


def test_apply_run_and_feedback_touch_only_text_fields():
    redactor = Redactor(["emails"])
    run = {"id": "r@1.io", "app_path": "/o/x@y.io", "inputs": {"q": "a@b.io"}, "outputs": {"a": "c@d.io"},
           "error": "failed for e@f.io", "extra": {"metadata": {"user": "g@h.io"}}, "tags": ["i@j.io"]}
    out = redactor.apply_run(run)
    assert out["id"] == "r@1.io" and out["app_path"] == "/o/x@y.io"
    assert "@" not in repr({k: out[k] for k in ("inputs", "outputs", "error", "extra", "tags")})
    feedback = {"id": "f", "run_id": "r", "key": "k", "comment": "ping a@b.io", "correction": {"output": "c@d.io"},
                "value": "e@f.io"}
    redacted = redactor.apply_feedback(feedback)
    assert redacted["comment"] == "ping [REDACTED:email]"
    assert redacted["correction"] == {"output": "[REDACTED:email]"} and redacted["value"] == "[REDACTED:email]"
    assert redactor.counts == {"email": 8}


def test_no_rules_is_a_no_op():
    redactor = Redactor([])
    value = {"a": "x@y.io"}
    assert redactor.apply(value) is value and not redactor and redactor.counts == {}


@pytest.mark.parametrize("rules, match", [
    pytest.param([{"pattern": "(unclosed"}], r"redact\[0\]\.pattern: redaction pattern '\(unclosed' is not a valid",
                 id="bad-regex-named"),
    pytest.param(["secrets", {"pattern": "a*"}], r"redact\[1\]\.pattern: .*'a\*' matches the empty string",
                 id="empty-match"),
    pytest.param(["passwords"], r"redact\[0\]: unknown redaction preset 'passwords'", id="unknown-preset"),
    pytest.param([{"regex": "x"}], r"redact\[0\]: a custom redaction rule is", id="wrong-key"),
    pytest.param([42], r"redact\[0\]: expected a preset name", id="not-a-rule"),
])
def test_bad_rules_are_config_errors(rules, match):
    with pytest.raises(ConfigError, match=match):
        Redactor(rules)


def test_config_key_is_reported():
    with pytest.raises(ConfigError) as caught:
        Redactor([{"pattern": "["}], key="exports[2].redact")
    assert caught.value.key == "exports[2].redact[0].pattern" and "'['" in str(caught.value)


def test_long_text_without_matches_is_fast():
    redactor = Redactor(["emails", "secrets"])
    blob = "A" * 2_000_000 + "@" + "b" * 2_000_000  # base64-like run with a stray '@'
    start = time.perf_counter()
    assert redactor.apply(blob) == blob
    assert time.perf_counter() - start < 5
