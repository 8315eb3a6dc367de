"""The Overview's "Hub webhook" part: rendered from what the webhook-keeping flow recorded, never from the Hub."""

from __future__ import annotations

from bridge.flows import hub_webhook
from bridge.ui.wiring_hub import NEVER_CHECKED, hub_webhook_html
from conftest import run_jobs

CONFIG = """
experiments:
  - repo: "acme/*-evals"
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""
SECRET = "wiring-secret-93ad"


def checked(make_bridge, config: str = CONFIG, **env: str):
    runtime = make_bridge(config, **{"WEBHOOK_SECRET": SECRET, "BRIDGE_PUBLIC_URL": "https://b.example", **env})
    runtime.reachable_url = runtime.settings.reachable_url(None, None)
    hub_webhook.schedule_at_start(runtime)
    run_jobs(runtime)
    return runtime


def test_before_the_first_check_it_says_when_it_will_look(make_bridge):
    assert hub_webhook_html(make_bridge(CONFIG)).startswith(f'<div class="notice info">{NEVER_CHECKED}')


def test_managed_webhook_shows_state_watched_items_and_last_delivery(make_bridge, hub):
    runtime = checked(make_bridge)
    page = hub_webhook_html(runtime, detailed=True)
    assert "managed by the bridge" in page and "</svg> enabled" in page
    assert "user <code>acme</code>" in page and "repo, discussion" in page
    assert "Last delivery received" in page and "none yet" in page and SECRET not in page
    public = hub_webhook_html(runtime, detailed=False)
    assert "acme" not in public and "</svg> enabled" in public  # names only for people allowed to act


def test_re_enabled_time_and_problems_are_shown_escaped(make_bridge, hub):
    runtime = checked(make_bridge)
    [hook] = hub.store.webhooks
    hook["disabled"] = True  # what a suspension looks like
    hub_webhook.schedule_at_start(runtime)
    run_jobs(runtime)
    state = hub_webhook.load_state(runtime)
    state["problems"] = ["Cannot tell whether '<script>x</script>' is a user"]
    hub_webhook.save_state(runtime, state)
    page = hub_webhook_html(runtime)
    assert "Re-enabled after a suspension" in page and '<time class="ts"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "1 problem:" in hub_webhook_html(runtime, detailed=False)


def test_not_managed_says_why(make_bridge):
    page = hub_webhook_html(checked(make_bridge, CONFIG + "hub_webhook: {manage: false}\n"))
    assert "set up by hand" in page and "manage is false" in page and "Watches" not in page
