"""Configuration: environment variables plus `bridge.yaml`, validated once at start.

An invalid file raises `ConfigError` naming the file, the key path and the bad value; `app.py` turns that into one
message and exit code 2. Missing tokens are not an error here: the landing page and `/healthz` report them, and jobs
that need them fail with a message saying which one is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError
from .formats.redact import compile_rules

HERE = Path(__file__).resolve().parent.parent
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_LANGSMITH_ENDPOINT = "https://api.smith.langchain.com"
DEFAULT_FILES = ["**/*.jsonl", "**/*.json", "**/*.csv", "**/*.parquet", "**/*.eval"]
EVAL_FORMATS = ("auto", "table", "lm-eval", "lighteval", "inspect", "promptfoo", "openai-evals")
PRESETS = ("runs", "sft", "preference", "kto")
TEMPLATE_FIELDS = frozenset({"repo", "repo_name", "task", "model", "short_sha", "sha", "ref", "pr"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMap(_Strict):
    inputs: list[str] = Field(default_factory=list)
    expected: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    scores: list[str] = Field(default_factory=list)


def _check_template(value: str) -> str:
    unknown = set(re.findall(r"{(\w*)}", value)) - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} in {value!r}; "
                         f"known: {', '.join(sorted(TEMPLATE_FIELDS))}")
    return value


def _owner_name(value: str, expected: str) -> str:
    if value.count("/") != 1 or not all(value.split("/")):
        raise ValueError(f"expected {expected}, got {value!r}")
    return value


class Benchmark(_Strict):
    """Which Hub benchmark dataset and task a task's results belong to, and which score is the headline."""

    dataset: str
    task_id: str
    score: str

    @field_validator("dataset")
    @classmethod
    def _dataset_id(cls, value: str) -> str:
        return _owner_name(value, "a dataset repo id 'owner/name'")


class EvalResults(_Strict):
    """Opt-in: after a `main` upload, the mapped tasks' headline scores go to the model repo's `.eval_results/`."""

    model_repo: str = "{model}"
    pull_request: bool = True
    benchmarks: dict[str, Benchmark] = Field(min_length=1)

    _templates = field_validator("model_repo")(_check_template)


class ExperimentRule(_Strict):
    repo: str
    repo_type: Literal["dataset", "model", "space"] = "dataset"
    files: list[str] = Field(default_factory=lambda: list(DEFAULT_FILES))
    format: Literal[EVAL_FORMATS] = "auto"  # type: ignore[valid-type]
    columns: ColumnMap | None = None
    dataset_name: str = "{repo_name}/{task}"
    experiment_name: str = "{model}@{short_sha}"
    branches: list[str] = Field(default_factory=lambda: ["main"])
    pull_requests: bool = True
    regression_threshold: float = Field(default=0.1, ge=0)  # a continuous score dropping more is a regressed row
    max_rows: int = Field(default=10, ge=0)  # regressed (and fixed) rows listed per task in the PR comment
    eval_results: EvalResults | None = None

    @field_validator("repo")
    @classmethod
    def _repo_shape(cls, value: str) -> str:
        return _owner_name(value, "a glob over 'owner/name'")

    _templates = field_validator("dataset_name", "experiment_name")(_check_template)


class FeedbackLinks(_Strict):
    keys: list[str] = Field(min_length=1)
    expires_hours: float = Field(default=168, gt=0)


class Backfill(_Strict):
    project: str
    filter: str | None = None
    # Reconcile back-fills look this far behind the last runs they saw: LangSmith may ingest a run minutes after
    # it started, and a run still running at one reconcile is exported by a later one.
    lookback_minutes: float = Field(default=60, ge=0)


class ManagedRule(_Strict):
    """A LangSmith automation rule the bridge creates and keeps in line with this entry (see flows/rules.py)."""

    project: str = Field(min_length=1)
    filter: str | None = None
    sampling_rate: float = Field(default=1.0, ge=0, le=1)
    name: str | None = None  # display name; "hub-langsmith-bridge: <repo>" when left out


MANAGED_NAME = "hub-langsmith-bridge: {repo}"


class ExportTarget(_Strict):
    rule_id: str | None = None
    rule: ManagedRule | None = None
    # The tracing project a `rule_id:` entry's rule watches, so late feedback is looked for there (a managed
    # `rule:` names its own); without it, the projects its deliveries' runs come from.
    project: str | None = Field(default=None, min_length=1)
    repo: str
    private: bool = True
    presets: list[Literal[PRESETS]] = Field(default_factory=lambda: ["runs"])  # type: ignore[valid-type]
    feedback_links: FeedbackLinks | None = None
    redact: list[str | dict[str, str]] = Field(default_factory=list)
    flush_seconds: float = Field(default=60, ge=0)
    max_rows_per_commit: int = Field(default=5000, ge=1)
    # Row data one commit holds in memory at most (JSON bytes; the parquet files are smaller).
    max_bytes_per_commit: int = Field(default=64 * 1024 * 1024, ge=1024)
    positive_threshold: float = 1.0
    backfill: Backfill | None = None

    @field_validator("repo")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")) or any(c in value for c in "*?[]"):
            raise ValueError(f"expected a dataset repo id 'owner/name', got {value!r}")
        return value

    # The id of a managed rule, once found or created in LangSmith (the entry itself stays frozen).
    _managed: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_rule(self) -> "ExportTarget":
        if (self.rule_id is None) == (self.rule is None):
            raise ValueError("give either rule_id (a rule you manage in LangSmith) or rule (one the bridge "
                             "creates and keeps), not both and not neither")
        if self.project is not None and self.rule is not None:
            raise ValueError("project goes with rule_id only: a managed rule names its project in rule.project")
        return self

    @property
    def named_project(self) -> str | None:
        """The project this entry's rule watches, when the configuration names it."""
        return self.rule.project if self.rule is not None else self.project

    @property
    def rule_name(self) -> str | None:
        return None if self.rule is None else (self.rule.name or MANAGED_NAME.format(repo=self.repo))

    @property
    def current_rule_id(self) -> str | None:
        """The rule whose deliveries this entry takes: the named one, or the managed one once it is known."""
        return self.rule_id or self._managed.get("id")

    def set_managed_rule_id(self, rule_id: str | None) -> None:
        self._managed["id"] = rule_id

    @field_validator("presets")
    @classmethod
    def _runs_always(cls, value: list[str]) -> list[str]:
        return value if "runs" in value else ["runs", *value]

    @field_validator("redact")
    @classmethod
    def _redact_rules(cls, value: list) -> list:
        try:  # the redactor's own compiler: what starts is exactly what runs
            compile_rules(value, key="redact")
        except ConfigError as exc:
            raise ValueError(f"{exc.key}: {exc.message}") from None
        return value


class JobOptions(_Strict):
    max_attempts: int = Field(default=8, ge=1)
    workers: int = Field(default=2, ge=1, le=32)
    # app.py runs the workers in a process of their own (see bridge/jobprocess.py); false: threads of the web process
    process: bool = True
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=600.0, gt=0)


# Where LangSmith's presigned object URLs point (its cloud object storage), besides the API host itself.
DEFAULT_OBJECT_HOSTS = ("storage.googleapis.com", "*.storage.googleapis.com", "*.s3.amazonaws.com",
                        "*.s3.*.amazonaws.com", "s3.*.amazonaws.com", "*.blob.core.windows.net")


class HubWebhookOptions(_Strict):
    """The Hub webhook the bridge keeps for itself (see bridge/flows/hub_webhook.py)."""
    manage: bool | None = None  # None: managed when a public URL and WEBHOOK_SECRET exist
    domains: list[Literal["repo", "discussion"]] = Field(default_factory=lambda: ["repo", "discussion"],
                                                         min_length=1)


class BridgeConfig(_Strict):
    experiments: list[ExperimentRule] = Field(default_factory=list)
    exports: list[ExportTarget] = Field(default_factory=list)
    jobs: JobOptions = Field(default_factory=JobOptions)
    hub_webhook: HubWebhookOptions = Field(default_factory=HubWebhookOptions)
    reconcile_minutes: float = Field(default=30, ge=0)
    retention_days: float = Field(default=7, gt=0)
    failed_retention_days: float = Field(default=30, gt=0)
    object_hosts: list[str] = Field(default_factory=lambda: list(DEFAULT_OBJECT_HOSTS))
    # Reloads the managed rules' ids (`flows.rules.restore_rule_ids`). The job process creates those rules and
    # remembers their ids in the store; the web process, which routes deliveries, learns a new id from there.
    _reload_rule_ids: Callable[[], None] | None = PrivateAttr(default=None)

    def reload_rule_ids_with(self, reload: Callable[[], None]) -> None:
        self._reload_rule_ids = reload

    def exports_for(self, rule_id: str) -> list[ExportTarget]:
        """One target per dataset repo that `rule_id` writes to: entries sharing a repo are merged. A rule id no
        entry has (yet) makes the managed rules' ids be read again first: the rule may have just been created."""
        matching = [t for t in self.exports if t.current_rule_id in ("*", rule_id)]
        if not matching and self._reload_rule_ids is not None and any(t.rule is not None for t in self.exports):
            self._reload_rule_ids()
            matching = [t for t in self.exports if t.current_rule_id in ("*", rule_id)]
        repos = dict.fromkeys(t.repo for t in matching)
        return [merge_targets([t for t in matching if t.repo == repo]) for repo in repos]

    def repo_target(self, repo: str) -> ExportTarget | None:
        """Every entry writing to `repo` as one: what its flushes and its dataset card follow."""
        entries = [t for t in self.exports if t.repo == repo]
        return merge_targets(entries) if entries else None

    def export_repos(self) -> list[str]:
        return list(dict.fromkeys(t.repo for t in self.exports))


def merge_targets(entries: list[ExportTarget]) -> ExportTarget:
    """Several `exports` entries writing to one repo (two rules, one dataset): the union of their presets and
    redaction rules, the shortest flush window and smallest commit, private if any says so."""
    first = entries[0]
    if len(entries) == 1:
        return first
    presets = [p for p in PRESETS if any(p in t.presets for t in entries)]
    redact = list({_hashable(r): r for t in entries for r in t.redact}.values())
    return first.model_copy(update={
        "presets": presets, "redact": redact,
        "private": any(t.private for t in entries), "flush_seconds": min(t.flush_seconds for t in entries),
        "max_rows_per_commit": min(t.max_rows_per_commit for t in entries),
        "max_bytes_per_commit": min(t.max_bytes_per_commit for t in entries),
        "feedback_links": next((t.feedback_links for t in entries if t.feedback_links), None)})


def _hashable(rule: str | dict) -> str:
    return rule if isinstance(rule, str) else repr(sorted(rule.items()))


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    key = _key_path(err["loc"])
    if err["type"] == "extra_forbidden":
        return key, "unknown key"
    if err["type"] == "missing":
        return key, "required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error":
        message += f", got {err['input']!r}"
    return key, message


def parse_config(data: Any, path: str) -> BridgeConfig:
    if data is None:
        return BridgeConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path=path)
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as exc:
        key, message = _first_error(exc)
        raise ConfigError(message, path=path, key=key) from None


def load_config(path: Path) -> BridgeConfig:
    """A missing file is an empty config; unreadable YAML or an invalid schema raises ConfigError."""
    if not path.exists():
        return BridgeConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=str(path)) from None
    return parse_config(data, str(path))


def _secret(env: dict, name: str) -> SecretStr | None:
    value = env.get(name, "").strip()
    return SecretStr(value) if value else None


def _positive(env: dict, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(f"expected a positive number of seconds, got {raw!r}", key=name)
    return value


def _url(env: dict, name: str) -> str | None:
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(f"expected an http(s) URL such as https://bridge.example.com, got {raw!r}", key=name)
    return raw


@dataclass(frozen=True)
class Settings:
    config: BridgeConfig
    config_path: Path
    state_dir: Path
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    langsmith_endpoint: str = DEFAULT_LANGSMITH_ENDPOINT
    hf_token: SecretStr | None = None
    langsmith_api_key: SecretStr | None = None
    langsmith_workspace_id: str | None = None
    langsmith_web_url: str | None = None
    webhook_secret: SecretStr | None = None
    langsmith_webhook_secret: SecretStr | None = None
    trace_project: str | None = None
    admins: tuple[str, ...] = ()
    admin_password: SecretStr | None = None
    metrics_token: SecretStr | None = None
    space_id: str | None = None
    space_host: str | None = None
    public_url: str | None = None
    request_timeout: float = 30.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, config_path: Path | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        path = Path(config_path or env.get("BRIDGE_CONFIG") or HERE / "bridge.yaml")
        state_dir = Path(env.get("BRIDGE_STATE_DIR") or HERE / ".bridge-state")
        return cls(
            config=load_config(path),
            config_path=path,
            state_dir=state_dir,
            hf_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
            langsmith_endpoint=(env.get("LANGSMITH_ENDPOINT") or DEFAULT_LANGSMITH_ENDPOINT).rstrip("/"),
            hf_token=_secret(env, "HF_TOKEN"),
            langsmith_api_key=_secret(env, "LANGSMITH_API_KEY"),
            langsmith_workspace_id=env.get("LANGSMITH_WORKSPACE_ID") or None,
            langsmith_web_url=(env.get("LANGSMITH_WEB_URL") or "").rstrip("/") or None,
            webhook_secret=_secret(env, "WEBHOOK_SECRET"),
            langsmith_webhook_secret=_secret(env, "LANGSMITH_WEBHOOK_SECRET"),
            trace_project=env.get("BRIDGE_TRACE_PROJECT") or None,
            admins=tuple(a.strip() for a in env.get("BRIDGE_ADMINS", "").split(",") if a.strip()),
            admin_password=_secret(env, "BRIDGE_ADMIN_PASSWORD"),
            metrics_token=_secret(env, "METRICS_TOKEN"),
            space_id=env.get("SPACE_ID") or None,
            space_host=env.get("SPACE_HOST") or None,
            public_url=_url(env, "BRIDGE_PUBLIC_URL"),
            request_timeout=_positive(env, "BRIDGE_REQUEST_TIMEOUT", 30.0),
        )

    def reachable_url(self, share_url: str | None, local_url: str | None, sandbox: bool = False) -> str | None:
        """The URL upstream services can reach this bridge at, for the webhooks and rules it manages:
        BRIDGE_PUBLIC_URL, else the Space's own host, else the share link; the local URL only in the sandbox,
        whose emulators run on this machine. None when nothing outside can reach it (`--no-share` off a Space)."""
        if self.public_url:
            return self.public_url
        if self.space_host:
            return f"https://{self.space_host}"
        if share_url:
            return share_url.rstrip("/")
        return local_url.rstrip("/") if sandbox and local_url else None

    def missing(self) -> list[str]:
        """Names of the credentials that are not set, for the landing page and /healthz."""
        names = {"HF_TOKEN": self.hf_token, "LANGSMITH_API_KEY": self.langsmith_api_key,
                 "WEBHOOK_SECRET": self.webhook_secret, "LANGSMITH_WEBHOOK_SECRET": self.langsmith_webhook_secret}
        return [name for name, value in names.items() if value is None]

    def secret_values(self) -> list[str]:
        """Every configured secret value, so log filters and tests can make sure none leaks."""
        values = [self.hf_token, self.langsmith_api_key, self.webhook_secret, self.langsmith_webhook_secret,
                  self.admin_password, self.metrics_token]
        return [v.get_secret_value() for v in values if v is not None]
