"""One module per job kind. Flows are the only code that talks to both upstream clients."""

from __future__ import annotations

from collections.abc import Callable


def handlers() -> dict[str, Callable]:
    """The handler for each job kind the webhooks and the UI enqueue."""
    from ..tracing import traced
    from . import backfill, experiments, exports, feedback, housekeeping, hub_webhook, reconcile, rules, scores

    kinds = {"experiment": experiments.run, "export": exports.run_export, "flush": exports.run_flush,
             backfill.BACKFILL: backfill.run_backfill, feedback.FEEDBACK: feedback.run_feedback,
             reconcile.RECONCILE: reconcile.run_reconcile, housekeeping.HOUSEKEEPING: housekeeping.run_housekeeping,
             hub_webhook.HUB_WEBHOOK: hub_webhook.run_hub_webhook, rules.RULES: rules.run_rules,
             scores.SCORES: scores.run_recover}
    return {kind: traced(handler) for kind, handler in kinds.items()}
