"""The Overview page, the only one open to everybody: what the bridge does, in the sandbox where its pages are, the
webhook URLs and how to set up each side, which credentials are set (never their values), job counts, the last
delivery from each source, and charts of the last 48 hours (for people who may act).

The connection checks call upstream (and name the token's user), so they need the same authorisation as actions.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gradio as gr
import pandas as pd

from .. import __version__, access, activity
from ..errors import BridgeError
from ..routing import OWN
from ..jobs import SHOWN_STATES
from .common import jobs_now, on, require, viewer
from .html import esc, icon, kv, link, notice, plural, ts
from .wiring_hub import hub_webhook_html
from .wiring import langsmith_rules_html

HUB_TO_SMITH = """<h3>Hub → LangSmith</h3>
<p class="flow">Eval results pushed to a watched repo (lm-evaluation-harness, lighteval, Inspect, promptfoo,
openai/evals, plain tables) become LangSmith experiments. Pull requests get a comment comparing their scores with
<code>main</code>.</p>"""

SMITH_TO_HUB = """<h3>LangSmith → Hub</h3>
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

NOT_SET = f'<span class="warn-text">{icon("warn")} not set</span>'
IS_SET = f'<span class="ok-text">{icon("ok")} set</span>'
CREDENTIALS = [("HF_TOKEN", "reads eval repos, writes export datasets, comments on PRs"),
               ("LANGSMITH_API_KEY", "uploads experiments, reads runs and feedback"),
               ("WEBHOOK_SECRET", "authenticates Hub deliveries"),
               ("LANGSMITH_WEBHOOK_SECRET", "authenticates LangSmith deliveries")]
SOURCES = {"hub": "Hub", "langsmith": "LangSmith"}
CHART_SECONDS = 30


def credentials_html(settings: Any) -> str:
    missing = set(settings.missing())
    rows = "".join(
        f'<tr><td><code>{name}</code><div class="use">{use}</div></td>'
        f'<td class="nowrap">{NOT_SET if name in missing else IS_SET}</td></tr>'
        for name, use in CREDENTIALS)
    return f'<table class="tbl compact"><tbody>{rows}</tbody></table>'


def counts_html(counts: dict[str, int]) -> str:
    chips = "".join(f'<div class="stat st-{esc(state)}"><b>{n}</b><span>{esc(state)}</span></div>'
                    for state, n in {**{s: 0 for s in SHOWN_STATES}, **counts}.items())
    return f'<div class="stats">{chips}</div>'


# ---------------------------------------------------------------- last deliveries
def echo_of(delivery: dict) -> str | None:
    """What the bridge itself caused, when this ignored Hub delivery is an echo of it (its commit to an export
    dataset, a commit it made, its own PR comment), as routing named it when the delivery came in. None otherwise."""
    reason = delivery.get("reason") or ""
    if delivery["source"] != "hub" or delivery["outcome"] != "ignored":
        return None
    if reason.startswith(OWN):
        return reason
    if "is a commit the bridge made" in reason:
        return f"{OWN} commit"
    return None


def delivery_line(store: Any, delivery: dict, detailed: bool, echo: str | None) -> str:
    when_ = ts(delivery["received_at"])
    if echo:
        return f'{when_} <span class="muted">{esc(echo)} (ignored, as it should be)</span>'
    if delivery["outcome"] == "queued":
        return f'{when_} <span class="muted">queued {jobs_now(store, delivery.get("job_ids"))}</span>'
    reason = f' — {esc(delivery.get("reason"))}' if detailed and delivery.get("reason") else ""
    return f'{when_} <span class="muted">{esc(delivery["outcome"])}{reason}</span>'


def source_html(store: Any, source: str, detailed: bool) -> str:
    """The last delivery that did something (queued jobs), and the latest one when it is another."""
    recent = store.deliveries(limit=50, source=source)
    label = f'<b>{SOURCES[source]}</b>'
    if not recent:
        return f'<div class="last" data-source="{source}">{label} <span class="muted">no delivery yet</span></div>'
    useful = next((d for d in recent if d["outcome"] == "queued"), None)
    lines = []
    if useful is not None:
        lines.append(f'<div class="useful">{delivery_line(store, useful, detailed, None)}</div>')
    latest = recent[0]
    if latest is not useful:
        echo = echo_of(latest)
        lines.append(f'<div class="latest{" echo" if echo else ""}"><span class="muted">latest:</span> '
                     f'{delivery_line(store, latest, detailed, echo)}</div>')
    return f'<div class="last" data-source="{source}">{label}{"".join(lines)}</div>'


def activity_html(runtime: Any, detailed: bool) -> str:
    store = runtime.store
    return (counts_html(store.counts()) + '<h4>Last deliveries</h4>' +
            "".join(source_html(store, source, detailed) for source in SOURCES))


# ---------------------------------------------------------------- setup and sandbox
def open_endpoints(settings: Any) -> list[str]:
    """Like `runtime.warn_open_endpoints`, without logging again on every page view."""
    from ..runtime import HUB_PATH, LANGSMITH_PATH

    pairs = [("WEBHOOK_SECRET", settings.webhook_secret, HUB_PATH),
             ("LANGSMITH_WEBHOOK_SECRET", settings.langsmith_webhook_secret, LANGSMITH_PATH)]
    return [f"{name} is not set: {path} accepts deliveries from anyone."
            for name, value, path in pairs if value is None]


def wiring_html(runtime: Any, detailed: bool) -> str:
    """The Wiring panel: how each upstream is connected to the bridge, from what the flows recorded."""
    return (f'<div id="hub-webhook-state"><h4>Hub webhook</h4>{hub_webhook_html(runtime, detailed)}</div>'
            f'<div id="langsmith-rules-state">{langsmith_rules_html(runtime, detailed)}</div>')


def setup_notes(runtime: Any) -> str:
    warnings = [notice(f"{icon('warn')} {esc(w)}", "warn", raw=True) for w in open_endpoints(runtime.settings)]
    policy = access.current_policy(runtime)
    config = runtime.settings.config
    facts = kv([("Who can act", esc(policy.describe())),
                ("Configuration", f"{plural(len(config.experiments), 'experiments rule')}, "
                                  f"{plural(len(config.exports), 'exports target')}"),
                ("Version", esc(__version__))])
    return "".join(warnings) + facts


def push_snippet(links: dict) -> str:
    """One line that pushes a results file to the demo eval repo with the sandbox's credentials."""
    return ("python -c \"import json; from huggingface_hub import HfApi; "
            f"c = json.load(open('{links['credentials']}')); "
            "HfApi(endpoint=c['HF_ENDPOINT'], token=c['HF_TOKEN']).upload_file(path_or_fileobj='results.csv', "
            f"path_in_repo='results.csv', repo_id='{links['eval_repo']}', repo_type='dataset')\"")


def sandbox_html(links: dict) -> str:
    hub = [link(links["eval_repo_url"], f"eval repo {links['eval_repo']}", "pill"),
           link(links["pr_url"], "demo pull request with the bridge's comment", "pill"),
           link(links["export_repo_url"], f"export dataset {links['export_repo']}", "pill")]
    smith = [link(links["langsmith_home"], "workspace: datasets and experiments", "pill"),
             link(links["project_url"], f"project {links['project']}", "pill")]
    return (f'<h3>Sandbox</h3><p class="flow">This is the <b>sandbox</b>: local stand-ins for the Hub and LangSmith '
            f'seeded with demo data; nothing leaves this machine. A push to <code>{esc(links["eval_repo"])}</code> '
            f'and a LangSmith rule delivery were sent at start, then a pull request was opened.</p>'
            + kv([("Sandbox Hub", " ".join(hub)), ("Sandbox LangSmith", " ".join(smith)),
                  ("Credentials", f'<code>{esc(links["credentials"])}</code> <span class="muted">(sandbox-only '
                                  f'tokens and endpoints)</span>'),
                  ("Configuration", f'<code>{esc(links["config"])}</code>')]))


def check(service: str, probe: Any) -> str:
    try:
        return notice(f"{icon('ok')} <b>{service}</b>: {esc(probe())}", "ok", raw=True)
    except BridgeError as exc:
        return notice(f"{icon('error')} <b>{service}</b>: {esc(exc)}", "error", raw=True)


# ---------------------------------------------------------------- charts
def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=columns)
    if "time" in data:
        data["time"] = pd.to_datetime(data["time"], unit="s", utc=True)
    return data


def window(now: float) -> tuple[float, float]:
    """The 48 whole hours the charts cover, the current one last."""
    return activity.hour_of(now) - (activity.WINDOW_HOURS - 1) * activity.HOUR, activity.hour_of(now) + activity.HOUR


def chart_frames(runtime: Any, now: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    since, _ = window(now)
    db = runtime.store.db
    deliveries = [{"time": r["hour"], "deliveries": r["deliveries"],
                   "series": f'{SOURCES.get(r["source"], r["source"])} · {r["outcome"]}'}
                  for r in activity.deliveries_per_hour(db, since)]
    runs = [{"time": r["hour"], "runs": r["runs"], "dataset": r["repo"]}
            for r in activity.runs_exported_per_hour(db, since)]
    latency = [{"time": r["hour"], "ms": round(r[p] * 1000, 2), "series": f'{SOURCES.get(r["source"], r["source"])} {p}'}
               for r in (runtime.acks.per_hour(since) if runtime.acks else []) for p in ("p50", "p99")]
    return (frame(deliveries, ["time", "deliveries", "series"]), frame(runs, ["time", "runs", "dataset"]),
            frame(latency, ["time", "ms", "series"]))


def build_charts() -> list:
    with gr.Column(elem_classes="card", elem_id="charts"):
        gr.HTML('<h3>Last 48 hours</h3>')
        with gr.Row(equal_height=True):
            common = {"x": "time", "x_title": "hour", "height": 240, "show_label": False}
            bars = {**common, "x_bin": "1h", "y_aggregate": "sum"}
            deliveries = gr.BarPlot(y="deliveries", color="series", title="Deliveries per hour, by source and outcome",
                                    y_title="deliveries", color_title="source · outcome",
                                    elem_id="chart-deliveries", **bars)
            runs = gr.BarPlot(y="runs", color="dataset", title="Runs exported per hour", y_title="runs",
                              elem_id="chart-runs", **bars)
            # points, not a line: an hour without deliveries has no latency, and a line of one point is invisible
            latency = gr.ScatterPlot(y="ms", color="series", title="Webhook acknowledgement time per hour (p50, p99)",
                                     y_title="milliseconds", color_title="source percentile",
                                     elem_id="chart-latency", **common)
    return [deliveries, runs, latency]


def build(runtime: Any, timer: gr.Timer) -> dict:
    with gr.Row(equal_height=True):
        for text in (HUB_TO_SMITH, SMITH_TO_HUB):
            with gr.Column(elem_classes="card"):
                gr.HTML(text)
    sandbox = runtime.extras.get("sandbox")
    if sandbox:
        with gr.Column(elem_classes="card sandbox", elem_id="sandbox-panel"):
            gr.HTML(sandbox_html(sandbox))
            gr.Textbox(push_snippet(sandbox), label="Push your own results (a results.csv in this folder)",
                       buttons=["copy"], interactive=False, elem_id="sandbox-push", max_lines=3)
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Hub webhook</h3>')
            hub_url = gr.Textbox(label="URL", buttons=["copy"], interactive=False, elem_id="hub-url")
            gr.HTML(HUB_STEPS)
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>LangSmith webhook</h3>')
            smith_url = gr.Textbox(label="URL", buttons=["copy"], interactive=False, elem_id="smith-url")
            gr.HTML(SMITH_STEPS)
    # How each upstream is wired to the bridge (its Hub webhook, its LangSmith rules), from what the flows recorded.
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Wiring</h3>')
            wiring = gr.HTML(elem_id="wiring")
    with gr.Row(equal_height=False):
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Credentials</h3>')
            credentials = gr.HTML(elem_id="credentials")
            with gr.Row():
                with gr.Column(min_width=160):
                    hub_check = gr.Button("Check the Hub", size="sm", elem_id="check-hub")
                    hub_result = gr.HTML(elem_id="check-hub-result")
                with gr.Column(min_width=160):
                    smith_check = gr.Button("Check LangSmith", size="sm", elem_id="check-smith")
                    smith_result = gr.HTML(elem_id="check-smith-result")
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Activity</h3>')
            activity_box = gr.HTML(elem_id="activity")
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Setup</h3>')
            notes = gr.HTML(elem_id="setup-notes")
    charts = build_charts()
    chart_timer = gr.Timer(CHART_SECONDS)

    def load_overview(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        urls = runtime.webhook_urls()
        detailed = viewer(runtime, request, profile).allowed
        return (urls["hub"], urls["langsmith"], credentials_html(runtime.settings), activity_html(runtime, detailed),
                setup_notes(runtime), wiring_html(runtime, detailed), *load_charts(request, profile))

    def refresh_activity(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[str, str]:
        detailed = viewer(runtime, request, profile).allowed
        return activity_html(runtime, detailed), wiring_html(runtime, detailed)

    def load_charts(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        """Charts name export datasets: only for people who may act (others see empty charts)."""
        now = time.time()
        if viewer(runtime, request, profile).allowed:
            frames = chart_frames(runtime, now)
        else:
            frames = tuple(frame([], ["time", y, c]) for y, c in (("deliveries", "series"), ("runs", "dataset"),
                                                                  ("ms", "series")))
        limits = list(window(now))
        return (gr.BarPlot(frames[0], x_lim=limits), gr.BarPlot(frames[1], x_lim=limits),
                gr.ScatterPlot(frames[2], x_lim=limits))

    def check_hub(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        require(runtime, request, profile, "Hub connection check")
        return check("Hub", runtime.hub.check)

    def check_langsmith(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        require(runtime, request, profile, "LangSmith connection check")
        return check("LangSmith", runtime.smith.check)

    on(hub_check.click, check_hub, None, hub_result)
    on(smith_check.click, check_langsmith, None, smith_result)
    on(timer.tick, refresh_activity, None, [activity_box, wiring], show_progress="hidden")
    on(chart_timer.tick, load_charts, None, charts, show_progress="hidden")
    return {"load": (load_overview, [hub_url, smith_url, credentials, activity_box, notes, wiring, *charts])}
