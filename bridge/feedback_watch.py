"""Where late feedback is looked for, and up to when it was (tables `feedback_projects` and `feedback_marks`).

For each export repo: the LangSmith projects its runs came from (seen in the deliveries it exported), when the
bridge first saw the repo, and the watermark: feedback changed before `checked_until` has been asked for. The
feedback sync (flows/feedback_sync.py) reads and advances it; the export flow records projects.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


class FeedbackWatch:
    def __init__(self, db: Any, clock: Any) -> None:
        self.db, self.clock = db, clock

    def remember(self, repo: str, project_ids: set[str]) -> None:
        """Projects a repo's runs come from (kept once, with when they were first seen), and the repo itself."""
        now = self.clock()
        with self.db.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO feedback_projects (repo, project_id, first_seen) VALUES (?, ?, ?)",
                             [(repo, pid, now) for pid in sorted(project_ids)])
            conn.execute("INSERT OR IGNORE INTO feedback_marks (repo, first_seen) VALUES (?, ?)", (repo, now))

    def projects(self, repo: str) -> list[str]:
        with self.db.read() as conn:
            return [r["project_id"] for r in conn.execute(
                "SELECT project_id FROM feedback_projects WHERE repo = ? ORDER BY first_seen, project_id", (repo,))]

    def since(self, repo: str) -> str:
        """Where the next check starts: the watermark, else when the repo was first seen (recorded now if never)."""
        with self.db.tx() as conn:
            conn.execute("INSERT OR IGNORE INTO feedback_marks (repo, first_seen) VALUES (?, ?)", (repo, self.clock()))
            row = conn.execute("SELECT first_seen, checked_until FROM feedback_marks WHERE repo = ?",
                               (repo,)).fetchone()
        return row["checked_until"] or iso(row["first_seen"])

    def advance(self, repo: str, until: str) -> None:
        """Feedback changed before `until` has been asked for and handed on: the next check starts there."""
        with self.db.tx() as conn:
            conn.execute("UPDATE feedback_marks SET checked_until = ?, checked_at = ? WHERE repo = ?",
                         (until, self.clock(), repo))


def remember_projects(store: Any, repos: list[str], runs: list) -> None:
    """Records the projects (`session_id`) of a delivery's runs for every repo it goes to, so later feedback on them
    is looked for there. Called before the runs' feedback is read, so the first check starts no later."""
    projects = {str(r["session_id"]) for r in runs if isinstance(r, dict) and r.get("session_id")}
    if projects:
        for repo in dict.fromkeys(repos):
            FeedbackWatch(store.db, store.clock).remember(repo, projects)
