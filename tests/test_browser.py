"""The operator UI in a real browser against a real `python app.py --sandbox --no-share` process.

Drives Debian's Chromium through Playwright (never `playwright install`). Every wait polls with a deadline.
Screenshots of each page go to test-artifacts/screenshots/; with UPDATE_SCREENSHOTS=1 the Overview, Jobs,
Experiments and Review ones are also copied to docs/screenshots/ for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from apps import AppProcess
from conftest import ROOT, wait_for

from playwright import sync_api as playwright_api

expect = playwright_api.expect
CHROMIUM = shutil.which("chromium")
# On a developer's machine without Chromium these tests say what to install; in CI (.ci/run installs it) they
# must run, so a missing browser there is a failure, not a skip.
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must provide Debian's chromium (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")

SHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
EXPORT_REPO, PROJECT = "sandbox-user/demo-feedback", "demo-support-bot"
# The demo's rule delivers every new run of PROJECT by itself; the back-fill test's run lives in another project.
BACKFILL_PROJECT = "ui-backfill"
JOBS: dict[str, int] = {}  # jobs started by earlier tests, for the Jobs screenshot
DOC_SHOTS = ("overview", "jobs", "experiments", "review")
# Pictographs and the dingbat emoji: a machine without a colour-emoji font (like this one) shows them as boxes.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")
SLOW = 45_000  # ms: a job goes queued -> running -> done in a few seconds; the table refreshes every 3 s


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The app as people start it, in a subprocess with its own state; stopped at the end."""
    folder = tmp_path_factory.mktemp("sandbox")
    app = AppProcess(folder, ["--sandbox"])
    try:
        app.start(folder / "state", timeout=60)
        yield {"base": app.base, "state": app.state,
               "credentials": json.loads((app.state / "sandbox-credentials.json").read_text())}
    finally:
        app.stop()


@pytest.fixture(scope="module")
def page(sandbox):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        tab = context.new_page()
        tab.goto(sandbox["base"])
        expect(tab.locator("#activity .stats")).to_be_visible(timeout=30_000)
        yield tab
        browser.close()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" and name in DOC_SHOTS:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", DOCS_SHOTS / f"{name}.png")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")


def field(page, elem_id: str):
    return page.locator(f"#{elem_id}").get_by_role("textbox")


def selected_job(page, before: str) -> int:
    """After a form is sent the page moves to Jobs with the new job selected."""
    expect(page.get_by_role("tab", name="Jobs")).to_have_attribute("aria-selected", "true", timeout=15_000)
    number = page.locator("#job-id").get_by_role("textbox")
    expect(number).not_to_have_value(before, timeout=15_000)
    return int(number.input_value())


def current_job(page) -> str:
    number = page.locator("#job-id").get_by_role("textbox")  # gradio mounts a tab when it is first opened
    return number.input_value() if number.count() else ""


def submit_and_wait(page, button: str, state: str) -> int:
    """Sends a Run-a-job form; the page moves to Jobs, where the new job reaches `state`."""
    before = current_job(page)
    page.locator(f"#{button}").click()
    job_id = selected_job(page, before)
    expect(job_state(page, job_id)).to_contain_text(state, timeout=SLOW)
    return job_id


def job_state(page, job_id: int):
    return page.locator(f'#jobs-table tr[data-job="{job_id}"] .state')


def on_emulator(href: str, emulator: str) -> str:
    """The sandbox sets LANGSMITH_WEB_URL to its emulator, so every LangSmith link must lead there."""
    assert urlsplit(href).netloc == urlsplit(emulator).netloc, f"{href} does not point at the emulator {emulator}"
    return href


def no_emoji(page) -> None:
    text = page.locator("body").inner_text()
    assert not EMOJI.search(text), f"emoji on the page: {EMOJI.findall(text)}"


def test_overview(page, sandbox):
    expect(page.locator("#who")).to_contain_text("Signed in")
    expect(page.locator("#hub-url").get_by_role("textbox")).to_have_value(sandbox["base"] + "/webhooks/hub")
    expect(page.locator("#credentials")).to_contain_text("HF_TOKEN")
    expect(page.locator("#activity")).to_contain_text("LangSmith")
    wiring = page.locator("#hub-webhook-state")  # the bridge created its own webhook on the sandbox Hub
    expect(wiring).to_contain_text("managed by the bridge", timeout=15_000)
    expect(wiring).to_contain_text("enabled")
    page.locator("#check-hub").click()
    expect(page.locator("#check-hub-result")).to_contain_text("Hub: connected as sandbox-user", timeout=15_000)
    page.locator("#check-smith").click()
    expect(page.locator("#check-smith-result")).to_contain_text("LangSmith: reachable, key accepted",
                                                                timeout=15_000)
    expect(page.locator("#check-hub-result")).to_contain_text("Hub:")  # each service keeps its own answer
    expect(page.locator("#setup-notes")).to_contain_text("1 experiments rule, 1 exports target")
    assert sandbox["credentials"]["HF_TOKEN"] not in page.content()
    no_emoji(page)


def test_overview_says_it_is_the_sandbox_and_links_its_pages(page, sandbox):
    panel = page.locator("#sandbox-panel")
    expect(panel).to_contain_text("This is the sandbox")
    expect(panel).to_contain_text(str(sandbox["state"] / "sandbox-credentials.json"))
    expect(page.locator("#sandbox-push").get_by_role("textbox")).to_have_value(re.compile(
        r"HfApi\(endpoint=c\['HF_ENDPOINT'\], token=c\['HF_TOKEN'\]\)\.upload_file\(.*sandbox-user/demo-evals"))
    hub_base, smith_base = sandbox["credentials"]["HF_ENDPOINT"], sandbox["credentials"]["LANGSMITH_ENDPOINT"]
    pr_link = panel.get_by_role("link", name=re.compile("demo pull request"))
    assert pr_link.get_attribute("href").startswith(hub_base)
    other = page.context.new_page()
    try:
        def comment_shown() -> bool:
            other.goto(pr_link.get_attribute("href"))
            return other.locator(".event", has_text="exact_match").count() > 0
        wait_for(comment_shown, timeout=90, interval=1, what="the bridge's comment on the demo PR")
        expect(other.locator("h1")).to_contain_text("Try the new decoding settings")
        expect(other.locator(".event").last).to_contain_text("regressed")  # the demo PR breaks one example
        other.goto(panel.get_by_role("link", name=re.compile("eval repo")).get_attribute("href"))
        expect(other.locator("ul.discussions")).to_contain_text("Try the new decoding settings")
        project = panel.get_by_role("link", name=re.compile("project demo-support-bot")).get_attribute("href")
        other.goto(on_emulator(project, smith_base))
        expect(other.locator("h1")).to_contain_text("Project demo-support-bot")
        other.goto(panel.get_by_role("link", name=re.compile("workspace")).get_attribute("href"))
        expect(other.locator("a.dataset").first).to_be_visible()
    finally:
        other.close()


def test_last_deliveries_show_what_did_something_and_label_echoes(page):
    activity = page.locator("#activity")
    hub = activity.locator('.last[data-source="hub"]')
    expect(hub.locator(".useful")).to_contain_text(re.compile(r"queued job #\d+ .*succeeded"), timeout=SLOW)
    # the bridge's own flush commit to the export dataset comes back from the sandbox Hub as an ignored delivery
    expect(hub.locator(".latest.echo")).to_contain_text("the bridge's own", timeout=SLOW)
    expect(activity.locator('.last[data-source="langsmith"] .useful')).to_contain_text("succeeded", timeout=SLOW)


def chart_texts(page, chart: str) -> list[str]:
    return [t.text_content() for t in page.locator(f"#chart-{chart} svg text").all()]


def test_overview_charts_render_the_sandbox_activity(page):
    def charted() -> bool:
        """The charts refresh every 30 s; a reload shows the store as it is now (the first flush takes 5 s)."""
        page.reload()
        expect(page.locator("#activity .stats")).to_be_visible(timeout=30_000)
        expect(page.locator("#chart-deliveries svg g.mark-rect.role-mark path").first).to_be_attached(timeout=30_000)
        return "sandbox-user/demo-feedback" in chart_texts(page, "runs")
    wait_for(charted, timeout=60, interval=1, what="the runs exported in the chart")
    legend = chart_texts(page, "deliveries")
    assert "Hub · queued" in legend and "LangSmith · queued" in legend, legend
    expect(page.locator("#chart-runs svg g.mark-rect.role-mark path").first).to_be_attached()
    expect(page.locator("#chart-latency svg g.mark-symbol.role-mark path").first).to_be_attached()
    assert {"Hub p50", "Hub p99", "LangSmith p99"} <= set(chart_texts(page, "latency"))
    shoot(page, "overview")


def test_forms_start_with_the_sandbox_demo_and_say_what_to_enter(page):
    open_tab(page, "Run a job")
    expect(field(page, "exp-repo")).to_have_value("sandbox-user/demo-evals")
    expect(field(page, "bf-project")).to_have_value(PROJECT)
    field(page, "exp-repo").fill("")
    page.locator("#exp-submit").click()
    expect(page.locator("#exp-repo-error")).to_have_text(re.compile(r"^\s*Enter a repo id like owner/name\s*$"))
    expect(page.locator("#deliveries")).to_contain_text("succeeded")  # the jobs' state now, not "queued"
    no_emoji(page)


def test_upload_an_experiment_and_follow_its_langsmith_link(page, sandbox):
    open_tab(page, "Run a job")
    field(page, "exp-repo").fill("sandbox-user/demo-evals")
    field(page, "exp-revision").fill("main")
    before = current_job(page)
    page.locator("#exp-submit").click()
    job_id = selected_job(page, before)
    expect(job_state(page, job_id)).to_contain_text("succeeded", timeout=SLOW)
    expect(page.locator("#job-detail")).to_contain_text("exact_match", timeout=15_000)
    link = page.locator(f'#jobs-table tr[data-job="{job_id}"] a.pill', has_text="LangSmith").first
    href = link.get_attribute("href")
    assert "/datasets/" in href and "/compare?selectedSessions=" in href
    JOBS["experiment"] = job_id

    langsmith = page.context.new_page()
    langsmith.goto(on_emulator(href, sandbox["credentials"]["LANGSMITH_ENDPOINT"]))
    expect(langsmith.locator("section.experiment h1")).to_contain_text("demo-org/tiny-chat-1b")
    expect(langsmith.locator("section.experiment .rows")).to_have_text(re.compile(r"\d+ row\(s\)"))
    expect(langsmith.locator("section.experiment")).to_contain_text("exact_match")
    langsmith.close()


def add_langsmith_run(credentials: dict) -> str:
    """A new run in a project no rule watches, through the real SDK, for the back-fill to find."""
    from langsmith import Client

    client = Client(api_url=credentials["LANGSMITH_ENDPOINT"], api_key=credentials["LANGSMITH_API_KEY"],
                    auto_batch_tracing=False)
    run_id, start = str(uuid.uuid4()), datetime.now(timezone.utc) - timedelta(seconds=5)
    client.create_run(name="ui-browser-test", run_type="llm", id=run_id, project_name=BACKFILL_PROJECT,
                      inputs={"messages": [{"role": "user", "content": "Where is my parcel?"}]},
                      outputs={"generations": [[{"text": "It ships tomorrow."}]]},
                      start_time=start, end_time=start + timedelta(seconds=1))  # synchronous without batching
    return run_id


def hub_run_ids(credentials: dict) -> set[str]:
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi

    api = HfApi(endpoint=credentials["HF_ENDPOINT"], token=credentials["HF_TOKEN"])
    ids: set[str] = set()
    for path in api.list_repo_files(EXPORT_REPO, repo_type="dataset"):
        if path.startswith("runs/") and path.endswith(".parquet"):
            local = api.hf_hub_download(EXPORT_REPO, path, repo_type="dataset")
            ids.update(pq.read_table(local, columns=["run_id"]).column("run_id").to_pylist())
    return ids


def test_backfill_reaches_the_hub_and_review_sends_feedback(page, sandbox):
    credentials = sandbox["credentials"]
    run_id = add_langsmith_run(credentials)
    open_tab(page, "Run a job")
    expect(page.locator("#bf-target").get_by_role("combobox")).to_have_value(EXPORT_REPO)
    field(page, "bf-project").fill(BACKFILL_PROJECT)
    field(page, "bf-filter").fill('eq(name, "ui-browser-test")')
    before = current_job(page)
    page.locator("#bf-submit").click()
    backfill = selected_job(page, before)
    expect(job_state(page, backfill)).to_contain_text("succeeded", timeout=SLOW)
    detail = page.locator("#job-detail")
    expect(detail).to_contain_text("flush job(s) #", timeout=15_000)
    flush = int(re.search(r"flush job\(s\) #(\d+)", detail.inner_text()).group(1))
    expect(job_state(page, flush)).to_contain_text("succeeded", timeout=SLOW)
    page.locator(f'#jobs-table tr[data-job="{flush}"]').click()
    # One flush per repo: runs the sandbox's own rule delivered in the same window may go out with this one.
    expect(detail).to_contain_text(re.compile(r"[1-9]\d* run\(s\) committed"), timeout=15_000)
    assert run_id in hub_run_ids(credentials)
    href = page.locator(f'#jobs-table tr[data-job="{flush}"] a.pill', has_text="HF commit").first.get_attribute("href")
    commit_page = page.context.new_page()  # the link names the flush's commit, and the sandbox Hub shows it
    commit_page.goto(href)
    expect(commit_page.locator("h1")).to_contain_text("[hub-langsmith-bridge]")
    assert "/commit/" in href and href.rsplit("/", 1)[1] in commit_page.content()
    commit_page.close()

    open_tab(page, "Review")
    page.locator("#review-refresh").click()
    card = page.locator(f'.run-card[data-run="{run_id}"]')
    expect(card).to_contain_text("Where is my parcel?", timeout=15_000)
    expect(card).to_contain_text("It ships tomorrow.")
    card.locator('button[data-act="comment"]').click()  # an empty comment is refused in the page
    expect(card.locator(".fb-sent")).to_have_text("Write a comment first, then press Send comment.")
    expect(page.locator("#review-status")).to_be_empty()
    card.locator(".fb-comment").fill("Polite and right.")
    card.locator('button[data-act="comment"]').click()
    expect(page.locator("#review-status")).to_contain_text("Comment on", timeout=15_000)
    card = page.locator(f'.run-card[data-run="{run_id}"]')
    expect(card.locator(".fb-comment")).to_have_value("")
    card.locator('button[data-act="up"]').click()
    expect(page.locator("#review-status")).to_contain_text("Good on", timeout=15_000)
    expect(page.locator("#review-status")).to_contain_text("queued as job #")
    no_emoji(page)
    shoot(page, "review")
    from langsmith import Client

    client = Client(api_url=credentials["LANGSMITH_ENDPOINT"], api_key=credentials["LANGSMITH_API_KEY"],
                    auto_batch_tracing=False)
    scored = wait_for(lambda: [f for f in client.list_feedback(run_ids=[run_id])
                               if f.key == "user_score" and f.score == 1],
                      timeout=30, interval=0.3, what="the Good score in the sandbox LangSmith")
    assert scored
    wait_for(lambda: [f for f in client.list_feedback(run_ids=[run_id]) if f.comment == "Polite and right."],
             timeout=30, interval=0.3, what="the comment in the sandbox LangSmith")
    assert credentials["LANGSMITH_API_KEY"] not in page.content()


def test_a_failed_job_shows_its_error_and_can_be_retried(page):
    open_tab(page, "Run a job")
    field(page, "exp-repo").fill("sandbox-user/does-not-exist")
    field(page, "exp-revision").fill("main")
    job_id = submit_and_wait(page, "exp-submit", "failed")
    row = page.locator(f'#jobs-table tr[data-job="{job_id}"]')
    expect(row.locator(".err")).to_contain_text("404")
    expect(page.locator("#job-detail .notice.error")).to_contain_text("does-not-exist", timeout=15_000)
    retry = page.locator("#job-retry")
    expect(retry).to_be_enabled(timeout=15_000)
    retry.click()
    expect(page.locator("#job-message")).to_contain_text("queued again")
    # the retry's attempt ran and failed again: two attempts in the detail, the count restarted from the retry
    expect(page.locator("#job-detail table tr")).to_have_count(3, timeout=SLOW)
    expect(job_state(page, job_id)).to_contain_text("failed", timeout=SLOW)
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^1/8$"))
    # Moving on to another job clears the message, and brings the detail into view under the table.
    page.mouse.wheel(0, -5000)
    page.locator(f'#jobs-table tr[data-job="{JOBS.get("experiment", job_id)}"]').click()
    expect(page.locator("#job-detail h2")).to_contain_text(f'#{JOBS.get("experiment", job_id)}')
    expect(page.locator("#job-message")).to_be_empty()
    expect(page.locator("#job-detail")).to_be_in_viewport()
    expect(page.locator("#jobs-table .page-line")).to_contain_text(re.compile(r"Jobs 1–\d+ of \d+"))
    no_emoji(page)
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, "jobs")


def test_a_missing_project_fails_in_plain_words(page):
    open_tab(page, "Run a job")
    field(page, "bf-project").fill("no-such-project")
    field(page, "bf-filter").fill("")
    job_id = submit_and_wait(page, "bf-submit", "failed")
    expect(page.locator(f'#jobs-table tr[data-job="{job_id}"] .err')).to_have_text(
        "LangSmith has no project named 'no-such-project'")
    open_tab(page, "Run a job")
    expect(page.locator("#bf-status")).to_be_empty()  # the last submission's message is gone on a new visit


def test_experiments_page_charts_main_and_the_demo_pr(page, sandbox):
    open_tab(page, "Experiments")
    chart = page.locator("#experiments-chart")
    expect(chart.locator(".js-plotly-plot")).to_be_visible(timeout=30_000)
    links = chart.locator(".textpoint a")
    expect(links.filter(has_text="PR #1")).to_have_count(1, timeout=15_000)
    assert links.count() >= 3  # the two pushes to main at start, the main revision reconciled, and the PR
    href = links.filter(has_text="PR #1").first.evaluate(  # plotly's SVG links carry xlink:href
        "a => a.getAttribute('href') || a.getAttributeNS('http://www.w3.org/1999/xlink', 'href')")
    assert "/compare?selectedSessions=" in on_emulator(href, sandbox["credentials"]["LANGSMITH_ENDPOINT"])
    latest = page.locator("#experiments-latest")
    expect(latest).to_contain_text("sandbox-user/demo-evals · demo_qa")
    expect(latest).to_contain_text("exact_match")
    expect(latest.get_by_role("link", name=re.compile("PR #1"))).to_be_visible()
    no_emoji(page)
    shoot(page, "experiments")
    langsmith = page.context.new_page()
    langsmith.goto(href)
    expect(langsmith.locator("section.experiment")).to_contain_text("exact_match")
    langsmith.close()


def test_settings_page(page, sandbox):
    open_tab(page, "Settings")
    expect(page.locator("#settings-problems")).to_be_visible()
    expect(page.locator("#settings-env")).to_contain_text("set (value hidden)")
    expect(page.locator("#settings-yaml")).to_contain_text(EXPORT_REPO)
    for secret in sandbox["credentials"].values():
        if not secret.startswith("http"):
            assert secret not in page.content()
    shoot(page, "settings")
    open_tab(page, "Run a job")
    shoot(page, "run")


def exported_feedback_link(credentials: dict) -> tuple[str, str]:
    """(run id, feedback link) of a run the demo's rule exported, read from the dataset as a user would."""
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi

    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(endpoint=credentials["HF_ENDPOINT"], token=credentials["HF_TOKEN"])
    try:
        paths = api.list_repo_files(EXPORT_REPO, repo_type="dataset")
    except RepositoryNotFoundError:  # the demo's first flush has not created it yet
        return None
    for path in paths:
        if path.startswith("runs/") and path.endswith(".parquet"):
            local = api.hf_hub_download(EXPORT_REPO, path, repo_type="dataset")
            for row in pq.read_table(local, columns=["run_id", "feedback_urls"]).to_pylist():
                if row["feedback_urls"]:
                    return row["run_id"], row["feedback_urls"][0]["url"]
    return None


def test_feedback_page_on_a_phone(page, sandbox):
    """The link in a dataset row opens the bridge's page: opening it records nothing, Bad with a comment records in
    LangSmith, and once the link has expired the page says so and offers no form."""
    import sqlite3

    from langsmith import Client

    credentials = sandbox["credentials"]
    run_id, url = wait_for(lambda: exported_feedback_link(credentials), timeout=90, interval=1,
                           what="a demo run exported with a feedback link")
    assert url.startswith(sandbox["base"].rstrip("/") + "/feedback/")
    client = Client(api_url=credentials["LANGSMITH_ENDPOINT"], api_key=credentials["LANGSMITH_API_KEY"],
                    auto_batch_tracing=False)
    before = [f.id for f in client.list_feedback(run_ids=[run_id])]
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        tab = phone.new_page()
        tab.goto(url)
        expect(tab.locator("h1")).to_have_text("How was this answer?")
        expect(tab.locator("#run-input")).not_to_be_empty()
        expect(tab.locator("#run-output")).not_to_be_empty()
        assert tab.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
        no_emoji(tab)
        shoot(tab, "feedback-page")
        tab.reload()
        assert [f.id for f in client.list_feedback(run_ids=[run_id])] == before  # opening it twice recorded nothing
        tab.locator("#comment").fill("Too vague <b>really</b>")
        tab.get_by_role("button", name="Bad").click()
        expect(tab.locator(".note.ok")).to_contain_text("your feedback is recorded", timeout=SLOW)
        wait_for(lambda: [f for f in client.list_feedback(run_ids=[run_id])
                          if f.comment == "Too vague <b>really</b>" and f.score == 0],
                 timeout=30, interval=0.3, what="the Bad rating in the sandbox LangSmith")
        token = url.rsplit("/", 1)[1]
        with sqlite3.connect(sandbox["state"] / "bridge" / "bridge.sqlite3", timeout=30) as db:
            db.execute("UPDATE feedback_links SET expires_at = '2020-01-02T03:04:00+00:00' WHERE token_id = ?",
                       (token,))
        tab.goto(url)
        expect(tab.locator(".note.error")).to_contain_text("This feedback link expired on 2020-01-02")
        expect(tab.locator("form")).to_have_count(0)
        shoot(tab, "feedback-page-expired")
    finally:
        phone.close()
