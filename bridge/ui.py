"""The Gradio app people open: what the bridge does, the webhook URLs to configure, what is set, health.

The UI reads the job store and submits jobs; the only upstream calls it makes are the explicit connection checks.
Secret values never reach it: only whether each one is set.
"""

from __future__ import annotations

import html

import gradio as gr

from . import __version__
from .errors import BridgeError
from .runtime import Runtime, warn_open_endpoints

INTRO = """
# 🤗 ⇄ 🦜 hub-langsmith-bridge

Connects the Hugging Face Hub and LangSmith in both directions:

- **Hub → LangSmith**: eval results pushed to a watched repo (lm-evaluation-harness, lighteval, Inspect, promptfoo,
  plain tables) become LangSmith experiments; pull requests get a score comment against `main`.
- **LangSmith → Hub**: runs sent by a LangSmith automation rule are appended to a Hub dataset (raw runs plus SFT,
  preference and KTO configs), batched into few commits, never duplicated.
"""


def _credential_rows(runtime: Runtime) -> str:
    settings = runtime.settings
    missing = set(settings.missing())
    rows = [("HF_TOKEN", "reads eval repos, writes export datasets, comments on PRs"),
            ("LANGSMITH_API_KEY", "uploads experiments, reads runs and feedback"),
            ("WEBHOOK_SECRET", f"checked on {runtime.webhook_urls()['hub'].split('?')[0]}"),
            ("LANGSMITH_WEBHOOK_SECRET", "checked on the LangSmith endpoint (?secret= or X-Webhook-Secret)")]
    lines = ["| setting | state | used for |", "|---|---|---|"]
    for name, use in rows:
        state = "⚠️ not set" if name in missing else "✅ set"
        lines.append(f"| `{name}` | {state} | {use} |")
    lines.append(f"| `HF_ENDPOINT` | `{settings.hf_endpoint}` | |")
    lines.append(f"| `LANGSMITH_ENDPOINT` | `{settings.langsmith_endpoint}` | |")
    return "\n".join(lines)


def _setup_text(runtime: Runtime) -> str:
    urls = runtime.webhook_urls()
    warnings = "".join(f"\n> ⚠️ {html.escape(w)}\n" for w in warn_open_endpoints(runtime.settings))
    return f"""
## Webhook URLs
**Hugging Face Hub** (Settings → Webhooks → *Add a new webhook*; watch your eval repos, domain *Repo*, and set the
secret to the value of `WEBHOOK_SECRET`):
```
{urls['hub']}
```
**LangSmith** (an automation rule → *Webhook* action; replace the placeholder with `LANGSMITH_WEBHOOK_SECRET`, or
send it as an `X-Webhook-Secret` header):
```
{urls['langsmith']}
```
{warnings}
## Configuration
{_credential_rows(runtime)}

Config file: `{html.escape(str(runtime.settings.config_path))}` with
{len(runtime.settings.config.experiments)} experiments rule(s) and {len(runtime.settings.config.exports)} exports
target(s). Bridge version {__version__}.
"""


def _jobs_text(runtime: Runtime) -> str:
    counts = runtime.store.counts()
    summary = " · ".join(f"{state}: **{n}**" for state, n in counts.items())
    return f"## Jobs\n{summary}"


def _check(probe) -> str:
    try:
        return f"✅ {probe()}"
    except BridgeError as exc:
        return f"❌ {html.escape(str(exc))}"


def build_ui(runtime: Runtime) -> gr.Blocks:
    with gr.Blocks(title="hub-langsmith-bridge") as ui:
        gr.Markdown(INTRO)
        setup = gr.Markdown()
        jobs = gr.Markdown()
        with gr.Row():
            hub_button = gr.Button("Check the Hub connection")
            smith_button = gr.Button("Check the LangSmith connection")
        check_result = gr.Markdown()
        hub_button.click(lambda: _check(runtime.hub.check), outputs=check_result, api_visibility="private")
        smith_button.click(lambda: _check(runtime.smith.check), outputs=check_result, api_visibility="private")
        ui.load(lambda: (_setup_text(runtime), _jobs_text(runtime)), outputs=[setup, jobs], api_visibility="private")
    return ui
