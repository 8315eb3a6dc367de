"""Who may use the operator UI beyond the Overview: read jobs, payloads, settings, and start or change jobs.

The policy is chosen once, when the app is launched (`launch_options`, called by `app.py`):

- `oauth`    on a Hugging Face Space (SPACE_ID is set): sign in with Hugging Face; the user, or one of the
             organisations in their OAuth profile, must be listed in BRIDGE_ADMINS. An empty list lets nobody in.
- `local`    off a Space, listening on loopback without a share link: only this machine can reach the app, and
             every request must still come from a loopback address.
- `password` off a Space otherwise (a public interface or a gradio.live link): gradio's login form with
             BRIDGE_ADMIN_PASSWORD. With no password set the UI is open to read the Overview only and every other
             handler refuses, saying which setting to add.

Hiding components is only cosmetic: every handler that reads a job or acts calls `authorize` on the server,
because gradio lets anyone call any registered function over HTTP, including `api_visibility="private"` ones.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bridge.access")

OAUTH, LOCAL, PASSWORD = "oauth", "local", "password"
PASSWORD_USER = "admin"
POLICY_KEY = "access"  # where the launched policy lives in runtime.extras


@dataclass(frozen=True)
class Policy:
    mode: str
    admins: tuple[str, ...] = ()
    password_set: bool = False

    def describe(self) -> str:
        """One sentence for the Overview: who can do what."""
        if self.mode == OAUTH:
            if not self.admins:
                return "Nobody can act yet: list Hugging Face user or organisation names in BRIDGE_ADMINS."
            # The Overview is public: say how to get in without listing who the admins are.
            return "Sign in with Hugging Face as a user, or a member of an organisation, listed in BRIDGE_ADMINS."
        if self.mode == LOCAL:
            return "Local mode: the app listens on loopback only, so anyone on this machine can act."
        if not self.password_set:
            return ("The app is reachable from other machines and BRIDGE_ADMIN_PASSWORD is not set, so only the "
                    "Overview is available.")
        return f"Sign in with user name {PASSWORD_USER} and the password in BRIDGE_ADMIN_PASSWORD."


@dataclass(frozen=True)
class Viewer:
    """The outcome of one authorisation: who asked, and if refused, a sentence saying what to do."""

    name: str | None
    allowed: bool
    reason: str = ""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_host(host: str | None) -> str:
    """The interface gradio will listen on when `server_name` is `host` (None means its env var or default)."""
    return host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"


def policy_for(settings: Any, host: str | None, share: bool) -> Policy:
    admins = tuple(settings.admins)
    if settings.space_id:
        return Policy(OAUTH, admins)
    if is_loopback(listen_host(host)) and not share:
        return Policy(LOCAL, admins)
    return Policy(PASSWORD, admins, password_set=settings.admin_password is not None)


def current_policy(runtime: Any) -> Policy:
    """The policy chosen at launch. An app launched without `launch_options` gets the strictest one that fits."""
    policy = runtime.extras.get(POLICY_KEY)
    if policy is None:
        settings = runtime.settings
        admins = tuple(settings.admins)
        policy = Policy(OAUTH, admins) if settings.space_id else Policy(PASSWORD, admins, password_set=False)
    return policy


def password_checker(settings: Any) -> Callable[[str, str], bool]:
    secret = settings.admin_password.get_secret_value()
    names = {PASSWORD_USER, *(a.casefold() for a in settings.admins)}

    def check(username: str, password: str) -> bool:
        ok_password = hmac.compare_digest(password.encode(), secret.encode())  # constant time
        return ok_password and (username or "").strip().casefold() in names
    return check


def launch_options(runtime: Any, host: str | None, share: bool) -> dict:
    """Keyword arguments for `server.launch(...)`: gradio's login form when the password policy applies.

    Also records the policy on the runtime, so every UI handler authorises against what was actually launched.
    """
    policy = policy_for(runtime.settings, host, share)
    runtime.extras[POLICY_KEY] = policy
    log.info("UI access policy: %s", policy.mode)
    if policy.mode == PASSWORD and policy.password_set:
        return {"auth": password_checker(runtime.settings),
                "auth_message": f"User name {PASSWORD_USER}; password: the value of BRIDGE_ADMIN_PASSWORD."}
    return {}


def org_names(profile: Any) -> set[str]:
    """Organisation handles from the OAuth userinfo (`orgs: [{preferred_username, name, ...}]`).

    Only the handle counts: `name` is a display name anyone can set to look like a listed organisation.
    """
    orgs = profile.get("orgs") if isinstance(profile, dict) else None
    return {str(org["preferred_username"]).casefold() for org in orgs or []
            if isinstance(org, dict) and org.get("preferred_username")}


def _oauth(policy: Policy, profile: Any) -> Viewer:
    if not policy.admins:
        return Viewer(None, False, "Nobody is allowed yet: set BRIDGE_ADMINS (Hugging Face user or organisation "
                                   "names, comma-separated) in the Space settings, then restart it.")
    if profile is None:
        return Viewer(None, False, "Sign in with Hugging Face (button at the top) to see jobs and run actions.")
    username = str(profile.get("preferred_username") or "")
    admins = {a.casefold() for a in policy.admins}
    if username.casefold() in admins or org_names(profile) & admins:
        return Viewer(username, True)
    return Viewer(username, False, f"{username} is not in BRIDGE_ADMINS: ask an admin of this Space to add "
                                   "your user name or one of your organisations.")


def _local(client_host: str | None) -> Viewer:
    if is_loopback(client_host):
        return Viewer("local", True)
    return Viewer(None, False, "This app only accepts actions from this machine (it listens on loopback).")


def _password(policy: Policy, username: str | None) -> Viewer:
    if not policy.password_set:
        return Viewer(None, False, "Actions are turned off: this app is reachable from other machines and "
                                   "BRIDGE_ADMIN_PASSWORD is not set. Set it and restart to sign in.")
    if not username:
        return Viewer(None, False, "Sign in with the admin password to see jobs and run actions.")
    return Viewer(username, True)


def authorize(policy: Policy, *, username: str | None, profile: Any, client_host: str | None) -> Viewer:
    """Decides one request. `username` is gradio's login (auth=), `profile` its OAuth profile (a dict)."""
    if policy.mode == OAUTH:
        return _oauth(policy, profile)
    if policy.mode == LOCAL:
        return _local(client_host)
    return _password(policy, username)


def authorize_request(runtime: Any, request: Any, profile: Any) -> Viewer:
    """`authorize` for a gradio handler's `gr.Request` and `gr.OAuthProfile | None`."""
    client = getattr(request, "client", None) if request is not None else None
    return authorize(current_policy(runtime), username=getattr(request, "username", None), profile=profile,
                     client_host=getattr(client, "host", None))
