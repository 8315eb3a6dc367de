"""Tolerant models of the two webhook payloads. The raw dict is always kept (the fast rule reader keeps the body text
instead: the web layer stores it with the delivery).

huggingface_hub's own `WebhookPayload` is strict (an unknown action or repo type is a 422, which the Hub counts as a
failed delivery) and drops `headSha`; these models accept anything well-formed and only insist on the fields the
bridge cannot work without.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.structs
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class HubEventKind(_Tolerant):
    action: str = ""
    scope: str = ""


class HubRepo(_Tolerant):
    type: str = "model"
    name: str = ""
    id: str | None = None
    private: bool | None = None
    head_sha: str | None = Field(default=None, alias="headSha")


class UpdatedRef(_Tolerant):
    ref: str = ""
    old_sha: str | None = Field(default=None, alias="oldSha")
    new_sha: str | None = Field(default=None, alias="newSha")


class HubDiscussion(_Tolerant):
    num: int | None = None
    is_pull_request: bool = Field(default=False, alias="isPullRequest")
    status: str | None = None


class HubDelivery(_Tolerant):
    event: HubEventKind
    repo: HubRepo
    updated_refs: list[UpdatedRef] = Field(default_factory=list, alias="updatedRefs")
    discussion: HubDiscussion | None = None
    raw: dict = Field(default_factory=dict, exclude=True)


class RuleDelivery(_Tolerant):
    rule_id: str
    runs: list[Any]
    start_time: str | None = None
    end_time: str | None = None
    feedback_stats: dict | None = None
    threads: list[Any] | None = None
    raw: dict = Field(default_factory=dict, exclude=True)


class PayloadError(ValueError):
    """The body is JSON but lacks what the bridge needs; the message names the fields."""


def _missing(body: dict, required: tuple[str, ...]) -> list[str]:
    return [name for name in required if body.get(name) is None]


def _validate(model: type[BaseModel], body: Any, required: tuple[str, ...]) -> Any:
    if not isinstance(body, dict):
        raise PayloadError(f"expected a JSON object, got {type(body).__name__}")
    missing = _missing(body, required)
    if missing:
        raise PayloadError(f"missing required field(s): {', '.join(missing)}")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PayloadError(f"invalid field {where}: {err['msg']}") from None
    parsed.raw = body
    return parsed


def parse_hub_delivery(body: Any) -> HubDelivery:
    return _validate(HubDelivery, body, ("event", "repo"))


def parse_rule_delivery(body: Any) -> RuleDelivery:
    return _validate(RuleDelivery, body, ("rule_id", "runs"))


class _RunRef(msgspec.Struct):
    id: Any = None


class _RuleHead(msgspec.Struct):
    rule_id: str
    runs: list[_RunRef]
    start_time: str | None = None
    end_time: str | None = None
    feedback_stats: dict | None = None
    threads: list[Any] | None = None


def read_rule_delivery(body: bytes | str) -> RuleDelivery | None:
    """What routing needs from a rule delivery (rule id, run ids, threads), read without building the runs.

    A 100-run delivery is ~250 KB: building it costs ~1 ms of CPU under the GIL, which webhook acknowledgements
    queue behind; skipping the runs' contents takes a tenth of that. Returns None for anything this reader does not
    take (not JSON, a field of another type than `RuleDelivery` declares, a run that is not an object, ...):
    `parse_rule_delivery` then judges the fully parsed body, so both paths accept and refuse the same deliveries.
    """
    try:
        head = msgspec.json.decode(body, type=_RuleHead)
    except (msgspec.MsgspecError, RecursionError):
        return None
    fields = msgspec.structs.asdict(head)
    # Every field given (raw too): a default_factory makes pydantic inspect its signature on each construct.
    return RuleDelivery.model_construct(**{**fields, "runs": [{"id": run.id} for run in head.runs], "raw": {}})
