"""The store's tables: each migration brings a store up one version (SQLite's
``user_version``); a store is never changed but by appending a migration."""

from __future__ import annotations

from pathlib import Path

DB_NAME = "nborch.db"

MIGRATIONS: list[list[str]] = [
    [  # 1: runs, task runs, attempts
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL,
            started_at TEXT NOT NULL, ended_at TEXT, logical_date TEXT NOT NULL,
            params TEXT NOT NULL, source TEXT, pid INTEGER, host TEXT, heartbeat_at REAL)""",
        "CREATE INDEX runs_by_start ON runs (started_at)",
        "CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at)",
        """CREATE TABLE task_runs (
            run_id TEXT NOT NULL REFERENCES runs (run_id), task TEXT NOT NULL,
            position INTEGER NOT NULL, upstream TEXT NOT NULL, notebook TEXT,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started_at TEXT,
            ended_at TEXT, output_path TEXT, vals TEXT, error TEXT, reason TEXT, progress TEXT,
            PRIMARY KEY (run_id, task))""",
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL,
            status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, output_path TEXT,
            error TEXT, PRIMARY KEY (run_id, task, attempt))""",
    ],
    [  # 2: crash detection, resume and incremental runs
        "ALTER TABLE runs ADD COLUMN pid_started REAL",
        "ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX runs_by_status ON runs (status)",
        "ALTER TABLE task_runs ADD COLUMN fingerprint TEXT",
        "ALTER TABLE task_runs ADD COLUMN result_of TEXT",
        "CREATE INDEX task_runs_by_task ON task_runs (task, status, ended_at)",
        "ALTER TABLE attempts ADD COLUMN kernel_pid INTEGER",
    ],
    [  # 3: schedules, grids
        "ALTER TABLE task_runs ADD COLUMN grid TEXT",
        "ALTER TABLE runs ADD COLUMN output_dir TEXT",
        """CREATE TABLE schedules (
            pipeline TEXT PRIMARY KEY, source TEXT NOT NULL, cron TEXT NOT NULL,
            timezone TEXT NOT NULL, catchup INTEGER NOT NULL, max_active_runs INTEGER NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0, last_slot TEXT, created_at TEXT NOT NULL)""",
        "CREATE INDEX runs_by_logical_date ON runs (pipeline, logical_date)",
    ],
    [  # 4: command tasks, declared products
        "ALTER TABLE task_runs ADD COLUMN command TEXT",
        "ALTER TABLE task_runs ADD COLUMN products TEXT",
    ],
    [  # 5: a run's own error (a slot that could not start), crashes told to the scheduler
        "ALTER TABLE runs ADD COLUMN error TEXT",
        # 0 when a crash is recorded, 1 once its on_failure hooks fired; NULL before then
        "ALTER TABLE runs ADD COLUMN crash_reported INTEGER",
    ],
    [  # 6: nborch cancel, from any process: when it was asked for
        "ALTER TABLE runs ADD COLUMN cancel_requested TEXT",
    ],
    [  # 7: schedules run after other pipelines, or have an SLA; what the scheduler did once
        # a JSON list of pipeline names; cron is '' for such a schedule
        "ALTER TABLE schedules ADD COLUMN after_pipelines TEXT",
        "ALTER TABLE schedules ADD COLUMN sla REAL",
        # the newest slot whose SLA was judged (later ones still may be missed)
        "ALTER TABLE schedules ADD COLUMN sla_checked TEXT",
        """CREATE TABLE sla_misses (
            pipeline TEXT NOT NULL, slot TEXT NOT NULL, run_id TEXT, status TEXT,
            fired_at TEXT NOT NULL, PRIMARY KEY (pipeline, slot))""",
        # each successful upstream run starts one run of each pipeline scheduled after it
        """CREATE TABLE after_triggers (
            pipeline TEXT NOT NULL, upstream_run_id TEXT NOT NULL, run_id TEXT,
            at TEXT NOT NULL, PRIMARY KEY (pipeline, upstream_run_id))""",
    ],
    [  # 8: pools, and the slots that running tasks of any run hold in them
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY, slots INTEGER NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        """CREATE TABLE pool_slots (
            pool TEXT NOT NULL, run_id TEXT NOT NULL, task TEXT NOT NULL,
            acquired_at TEXT NOT NULL, PRIMARY KEY (run_id, task))""",
        "CREATE INDEX pool_slots_by_pool ON pool_slots (pool)",
        "ALTER TABLE task_runs ADD COLUMN pool TEXT",
    ],
    [  # 9: how a run started (NULL: recorded before this), a schedule's -p parameters
        "ALTER TABLE runs ADD COLUMN trigger TEXT",
        "ALTER TABLE schedules ADD COLUMN params TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX runs_by_end ON runs (status, ended_at)",
    ],
    [  # 10: a grid instance's own parameters, what tells it from the grid's others (JSON)
        "ALTER TABLE task_runs ADD COLUMN own_values TEXT",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def newer_schema(path: Path, version: int) -> str:
    return (f"the run store {path} has schema version {version}, newer than this nborch "
            f"understands ({SCHEMA_VERSION}); upgrade nborch")
