"""The state dir's database schema: every table, index and column change, numbered, applied once, in order.

`PRAGMA user_version` records the last migration applied. Migration 1 is the schema every earlier version of the
bridge created (`IF NOT EXISTS`, so a state dir from before migrations were numbered upgrades in place); each later
change is a new entry at the end, never an edit of an applied one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: the queue, deliveries, the export ledger and back-fill cursors as first released.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        trigger TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        result TEXT,
        progress TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, priority, next_attempt_at);
    CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        received_at REAL NOT NULL,
        status_code INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        job_ids TEXT NOT NULL DEFAULT '[]',
        body TEXT
    );
    CREATE TABLE IF NOT EXISTS own_commits (
        oid TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS attempts (
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        outcome TEXT,
        error TEXT,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE TABLE IF NOT EXISTS export_buffer (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        repo TEXT NOT NULL,
        run_id TEXT NOT NULL,
        rows TEXT NOT NULL,
        end_time TEXT,
        job_id INTEGER,
        created_at REAL NOT NULL,
        UNIQUE (repo, run_id)
    );
    CREATE TABLE IF NOT EXISTS exported (
        repo TEXT NOT NULL,
        run_id TEXT NOT NULL,
        end_time TEXT,
        PRIMARY KEY (repo, run_id)
    );
    CREATE TABLE IF NOT EXISTS recent_runs (
        repo TEXT NOT NULL,
        run_id TEXT NOT NULL,
        committed_at REAL NOT NULL,
        row TEXT NOT NULL,
        PRIMARY KEY (repo, run_id)
    );
    CREATE TABLE IF NOT EXISTS export_repos (
        repo TEXT PRIMARY KEY,
        synced_shards TEXT NOT NULL DEFAULT '[]',
        card TEXT
    );
    CREATE TABLE IF NOT EXISTS backfill_cursors (
        job_id INTEGER PRIMARY KEY,
        cursor TEXT,
        counts TEXT NOT NULL
    );
    """,
    # 2: exactly once without full tree listings, bounded state, reusable feedback links, honest attempt counts.
    """
    ALTER TABLE jobs ADD COLUMN attempts_before INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_finished ON jobs (state, finished_at);
    CREATE INDEX jobs_subject ON jobs (kind, subject, state);
    CREATE INDEX deliveries_received ON deliveries (received_at);
    ALTER TABLE export_buffer ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE export_repos ADD COLUMN head TEXT;
    ALTER TABLE export_repos ADD COLUMN presets TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE repo_shards (
        repo TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (repo, path)
    );
    INSERT OR IGNORE INTO repo_shards (repo, path)
        SELECT export_repos.repo, shard.value FROM export_repos, json_each(export_repos.synced_shards) AS shard;
    UPDATE export_repos SET synced_shards = '[]';
    CREATE TABLE feedback_links (
        run_id TEXT NOT NULL,
        feedback_key TEXT NOT NULL,
        url TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (run_id, feedback_key)
    );
    CREATE TABLE backfill_marks (
        repo TEXT PRIMARY KEY,
        since TEXT
    );
    """,
    # 3: what the last check of the bridge's own Hub webhook found (flows/hub_webhook.py), for the Overview.
    """
    CREATE TABLE IF NOT EXISTS hub_webhook_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 4: what the bridge knows of each LangSmith automation rule it takes deliveries from (rule_state.py).
    """
CREATE TABLE IF NOT EXISTS langsmith_rules (
    key TEXT PRIMARY KEY,
    managed INTEGER NOT NULL,
    repos TEXT NOT NULL,
    rule_id TEXT,
    name TEXT,
    project TEXT,
    enabled INTEGER,
    problem TEXT,
    secret_fingerprint TEXT,
    checked_at REAL,
    log_since TEXT,
    log_status TEXT,
    last_applied TEXT,
    recovered INTEGER NOT NULL DEFAULT 0
);
    """,
    # 5: acknowledgement times of answered deliveries, for the Overview's latency chart (activity.py).
    """
CREATE TABLE IF NOT EXISTS ack_latency (
    at REAL NOT NULL,
    source TEXT NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ack_latency_at ON ack_latency (at);
    """,
    # 6: the headline score of every experiment the bridge uploaded or found, for the Experiments page (scores.py).
    """
CREATE TABLE IF NOT EXISTS experiment_scores (
    experiment_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    repo TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT,
    ref TEXT,
    pr INTEGER,
    revision TEXT NOT NULL,
    metric TEXT,
    score REAL,
    scores TEXT NOT NULL DEFAULT '{}',
    url TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS experiment_scores_series ON experiment_scores (repo, task, at);
    """,
    # 7: the bridge's own feedback page (/feedback/<token id>): each presigned link's token id, and what the page
    # shows of its run (name, input and output as exported, redacted and cut short), so rows never carry the link.
    """
ALTER TABLE feedback_links ADD COLUMN token_id TEXT;
ALTER TABLE feedback_links ADD COLUMN preview TEXT;
UPDATE feedback_links SET token_id = replace(url, rtrim(url, replace(url, '/', '')), '');
CREATE UNIQUE INDEX IF NOT EXISTS feedback_links_token ON feedback_links (token_id);
    """,
    # 8: late feedback (flows/exports.py). Which `runs` shard holds each run (its preset shards share the name), the
    # rewrites waiting for the next flush (rows of exported runs whose feedback changed), the feedback each exported
    # or buffered row was mapped from (a fingerprint) and when it was read, shards written in an older format
    # (rewritten by the next flush). Every shard path of a repo is now known, not only `runs` ones. Which shard held
    # which run was never recorded: the heads are forgotten, so the next flush of each repo lists it and reads every
    # shard again.
    """
CREATE TABLE run_shards (
    repo TEXT NOT NULL,
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (repo, run_id)
);
CREATE INDEX run_shards_path ON run_shards (repo, path);
CREATE TABLE export_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    run_id TEXT NOT NULL,
    rows TEXT NOT NULL,
    feedback_hash TEXT,
    job_id INTEGER,
    created_at REAL NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (repo, run_id)
);
ALTER TABLE exported ADD COLUMN feedback_hash TEXT;
ALTER TABLE exported ADD COLUMN feedback_at REAL;
ALTER TABLE export_buffer ADD COLUMN feedback_hash TEXT;
ALTER TABLE export_buffer ADD COLUMN feedback_at REAL;
ALTER TABLE export_updates ADD COLUMN feedback_at REAL;
ALTER TABLE repo_shards ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
UPDATE export_repos SET head = NULL;
DELETE FROM repo_shards;
    """,
    # 9: where late feedback is looked for (flows/feedback_sync.py). The projects each export repo's runs come from
    # (seen in its deliveries), and per repo when it was first seen and up to when LangSmith was last asked for
    # feedback changes (the watermark).
    """
CREATE TABLE IF NOT EXISTS feedback_projects (
    repo TEXT NOT NULL,
    project_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (repo, project_id)
);
CREATE TABLE IF NOT EXISTS feedback_marks (
    repo TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    checked_until TEXT,
    checked_at REAL
);
    """,
)


def migrate(conn) -> int:
    """Applies the migrations `conn`'s database has not seen, each in its own transaction; returns the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(statements):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Splits a migration into statements (executescript would commit on its own, outside our transaction)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s.strip(" ;\n")]
