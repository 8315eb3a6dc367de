"""The Overview page, the only one open to everybody: what the bridge does, the webhook URLs and how to set up
each side, which credentials are set (never their values), job counts and the last delivery from each source.

The connection checks call upstream (and name the token's user), so they need the same authorisation as actions.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from .. import __version__, access
from ..errors import BridgeError
from ..jobs import SHOWN_STATES
from .common import on, require, viewer
from .html import esc, kv, notice, ts
from .wiring_hub import hub_webhook_html
from .wiring import langsmith_rules_html

HUB_TO_SMITH = """<h3>🤗 Hub → 🦜 LangSmith</h3>
<p class="flow">Eval results pushed to a watched repo (lm-evaluation-harness, lighteval, Inspect, promptfoo,
openai/evals, plain tables) become LangSmith experiments. Pull requests get a comment comparing their scores with
<code>main</code>.</p>"""

SMITH_TO_HUB = """<h3>🦜 LangSmith → 🤗 Hub</h3>
<p class="flow">Runs sent by a LangSmith automation rule are appended to a Hub dataset (raw runs plus SFT, preference
and KTO configs), batched into few commits and never duplicated.</p>"""

HUB_STEPS = """<p>With <code>HF_TOKEN</code>, <code>WEBHOOK_SECRET</code> and a public URL the bridge creates and keeps
this webhook itself (<code>hub_webhook:</code> in <code>bridge.yaml</code>). By hand instead:</p><ol class="steps">
<li>On huggingface.co open <b>Settings → Webhooks → Add a new webhook</b>.</li>
<li>Watch the users, organisations or repos that hold your eval results; domain <b>Repo</b> (content changes).</li>
<li>Paste the URL above and set <b>Secret</b> to the value of <code>WEBHOOK_SECRET</code>.</li></ol>"""

SMITH_STEPS = """<p>The easy way: give an <code>exports</code> entry in <code>bridge.yaml</code> a <code>rule:</code>
(project, filter, sampling rate) and the bridge creates the rule in LangSmith and keeps it (see Wiring below). By
hand instead:</p><ol class="steps">
<li>In LangSmith open a tracing project → <b>Automations → Add rule</b>, with the filter and sampling you want.</li>
<li>Choose the <b>Webhook</b> action and paste the URL above, replacing the placeholder with
<code>LANGSMITH_WEBHOOK_SECRET</code> (or send it as an <code>X-Webhook-Secret</code> header).</li>
<li>Add the rule's id under <code>exports:</code> in <code>bridge.yaml</code> with the Hub dataset to write to.</li>
</ol>"""

NOT_SET = '<span class="warn-text">⚠️ not set</span>'
CREDENTIALS = [("HF_TOKEN", "reads eval repos, writes export datasets, comments on PRs"),
               ("LANGSMITH_API_KEY", "uploads experiments, reads runs and feedback"),
               ("WEBHOOK_SECRET", "authenticates Hub deliveries"),
               ("LANGSMITH_WEBHOOK_SECRET", "authenticates LangSmith deliveries")]


def credentials_html(settings: Any) -> str:
    missing = set(settings.missing())
    rows = "".join(
        f'<tr><td><code>{name}</code><div class="use">{use}</div></td>'
        f'<td class="nowrap">{NOT_SET if name in missing else "✅ set"}</td></tr>'
        for name, use in CREDENTIALS)
    return f'<table class="tbl compact"><tbody>{rows}</tbody></table>'


def counts_html(counts: dict[str, int]) -> str:
    chips = "".join(f'<div class="stat st-{state}"><b>{counts.get(state, 0)}</b><span>{state}</span></div>'
                    for state in SHOWN_STATES)
    return f'<div class="stats">{chips}</div>'


def delivery_html(source: str, delivery: dict | None, detailed: bool) -> str:
    label = {"hub": "🤗 Hub", "langsmith": "🦜 LangSmith"}[source]
    if delivery is None:
        return f'<div class="last"><b>{label}</b> <span class="muted">no delivery yet</span></div>'
    jobs = ", ".join(f"#{i}" for i in json.loads(delivery.get("job_ids") or "[]"))
    said = {"queued": f"queued job {jobs}", "duplicate": f"duplicate of job {jobs}"}.get(delivery["outcome"],
                                                                                         delivery["outcome"])
    reason = f' — {esc(delivery.get("reason"))}' if detailed and delivery.get("reason") else ""
    return (f'<div class="last"><b>{label}</b> {ts(delivery["received_at"])} '
            f'<span class="muted">HTTP {esc(delivery["status_code"])}, {esc(said)}{reason}</span></div>')


def activity_html(runtime: Any, detailed: bool) -> str:
    store = runtime.store
    last = {source: next(iter(store.deliveries(limit=1, source=source)), None) for source in ("hub", "langsmith")}
    return (counts_html(store.counts()) + '<h4>Last deliveries</h4>' +
            "".join(delivery_html(source, d, detailed) for source, d in last.items()))


def open_endpoints(settings: Any) -> list[str]:
    """Like `runtime.warn_open_endpoints`, without logging again on every page view."""
    from ..runtime import HUB_PATH, LANGSMITH_PATH

    pairs = [("WEBHOOK_SECRET", settings.webhook_secret, HUB_PATH),
             ("LANGSMITH_WEBHOOK_SECRET", settings.langsmith_webhook_secret, LANGSMITH_PATH)]
    return [f"{name} is not set: {path} accepts deliveries from anyone."
            for name, value, path in pairs if value is None]


def wiring_html(runtime: Any, detailed: bool) -> str:
    """The Wiring panel: how each upstream is connected to the bridge, from what the flows recorded."""
    return (f'<div id="hub-webhook-state">{hub_webhook_html(runtime, detailed)}</div>'
            f'<div id="langsmith-rules-state">{langsmith_rules_html(runtime, detailed)}</div>')


def setup_notes(runtime: Any) -> str:
    warnings = [notice(f"⚠️ {w}", "warn") for w in open_endpoints(runtime.settings)]
    policy = access.current_policy(runtime)
    config = runtime.settings.config
    facts = kv([("Who can act", esc(policy.describe())),
                ("Configuration", f"{len(config.experiments)} experiments rule(s), {len(config.exports)} exports "
                                  f"target(s)"),
                ("Version", esc(__version__))])
    return "".join(warnings) + facts


def check(probe: Any) -> str:
    try:
        return notice(f"✅ {probe()}", "ok")
    except BridgeError as exc:
        return notice(f"❌ {exc}", "error")


def build(runtime: Any, timer: gr.Timer) -> dict:
    with gr.Row(equal_height=True):
        for text in (HUB_TO_SMITH, SMITH_TO_HUB):
            with gr.Column(elem_classes="card"):
                gr.HTML(text)
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Hub webhook</h3>')
            hub_url = gr.Textbox(label="URL", buttons=["copy"], interactive=False, elem_id="hub-url")
            gr.HTML(HUB_STEPS)
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>LangSmith webhook</h3>')
            smith_url = gr.Textbox(label="URL", buttons=["copy"], interactive=False, elem_id="smith-url")
            gr.HTML(SMITH_STEPS)
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Credentials</h3>')
            credentials = gr.HTML(elem_id="credentials")
            with gr.Row():
                hub_check = gr.Button("Check the Hub", size="sm", elem_id="check-hub")
                smith_check = gr.Button("Check LangSmith", size="sm", elem_id="check-smith")
            check_result = gr.HTML(elem_id="check-result")
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Activity</h3>')
            activity = gr.HTML(elem_id="activity")
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Setup</h3>')
            notes = gr.HTML(elem_id="setup-notes")
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Wiring</h3>')
            wiring = gr.HTML(elem_id="wiring")

    def load_overview(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        urls = runtime.webhook_urls()
        detailed = viewer(runtime, request, profile).allowed
        return (urls["hub"], urls["langsmith"], credentials_html(runtime.settings), activity_html(runtime, detailed),
                setup_notes(runtime), wiring_html(runtime, detailed))

    def refresh_activity(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[str, str]:
        detailed = viewer(runtime, request, profile).allowed
        return activity_html(runtime, detailed), wiring_html(runtime, detailed)

    def check_hub(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        require(runtime, request, profile, "Hub connection check")
        return check(runtime.hub.check)

    def check_langsmith(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        require(runtime, request, profile, "LangSmith connection check")
        return check(runtime.smith.check)

    on(hub_check.click, check_hub, None, check_result)
    on(smith_check.click, check_langsmith, None, check_result)
    on(timer.tick, refresh_activity, None, [activity, wiring], show_progress="hidden")
    return {"load": (load_overview, [hub_url, smith_url, credentials, activity, notes, wiring])}
