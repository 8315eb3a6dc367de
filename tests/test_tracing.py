"""Self-tracing: a job becomes a run tree in LangSmith; tracing failures never fail a job."""

from conftest import run_jobs
from test_flow_experiments import CONFIG, enqueue, lm_eval, push


def traces(smith, project):
    return [r for r in smith.store.runs.values() if smith.store.sessions.get(r["session_id"], {}).get("name") == project]


def test_a_job_is_traced_as_a_run_tree(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG, BRIDGE_TRACE_PROJECT="bridge-traces")
    old, sha = push(hub, lm_eval())
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded"
    runs = traces(smith, "bridge-traces")
    [root] = [r for r in runs if not r.get("parent_run_id")]
    assert root["name"] == f"experiment job #{job.id}"
    assert "kind:experiment" in root["tags"] and "trigger:webhook" in root["tags"]
    meta = root["extra"]["metadata"]
    assert meta["job_id"] == job.id and meta["repo"] == "acme/llama-evals" and meta["sha"] == sha
    children = {r["name"] for r in runs if str(r.get("parent_run_id")) == str(root["id"])}
    assert "list files" in children and any(name.startswith("upload ") for name in children)
    assert root["end_time"] is not None


def test_tracing_failures_never_fail_a_job(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG, BRIDGE_TRACE_PROJECT="bridge-traces")
    smith.recorder.add_fault(r"^(/api/v1)?/runs(/[0-9a-f-]+)?$", status=500, times=1000)
    old, sha = push(hub, lm_eval())
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded" and job.attempts == 1
    assert len(smith.experiments("llama-evals/demo_qa")) == 1


def test_error_text_in_traces_is_scrubbed(hub, smith, make_bridge):
    """An upstream error that echoes the token (a 401 body) reaches the job's trace as ***, like the job store."""
    from conftest import HF_TOKEN

    runtime = make_bridge(CONFIG, BRIDGE_TRACE_PROJECT="bridge-traces")
    old, sha = push(hub, lm_eval())
    hub.recorder.add_fault(r"/tree/", status=401, times=10,
                           body=f"Invalid credentials in Authorization header: Bearer {HF_TOKEN}")
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "failed"
    runs = traces(smith, "bridge-traces")
    errors = [r.get("error") for r in runs if r.get("error")]
    assert errors and all(HF_TOKEN not in e for e in errors) and any("***" in e for e in errors)
