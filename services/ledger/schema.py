"""The ledger's schema as named migrations, applied in order at start-up.

Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            last_ingest_at TEXT
        );
        CREATE TABLE memories (
            profile TEXT NOT NULL,
            id TEXT NOT NULL,
            format TEXT NOT NULL,
            type TEXT NOT NULL,
            timestamp TEXT,
            text TEXT NOT NULL,
            record TEXT NOT NULL,
            source_path TEXT NOT NULL,
            ingested_at TEXT NOT NULL,
            indexed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (profile, id)
        ) WITHOUT ROWID;
        CREATE INDEX memories_unindexed ON memories (profile, indexed);
        CREATE TABLE memory_sources (
            profile TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            path TEXT NOT NULL,
            locator TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (profile, memory_id, path)
        ) WITHOUT ROWID;
        CREATE TABLE files (
            profile TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT,
            memories INTEGER NOT NULL DEFAULT 0,
            problems INTEGER NOT NULL DEFAULT 0,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (profile, path)
        ) WITHOUT ROWID;
        CREATE TABLE rejects (
            id INTEGER PRIMARY KEY,
            profile TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT,
            locator TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX rejects_by_path ON rejects (profile, path);
        CREATE TABLE samples (
            profile TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            mode TEXT NOT NULL,
            kind TEXT NOT NULL,
            quality REAL NOT NULL,
            weight REAL NOT NULL,
            split TEXT NOT NULL,
            excluded TEXT,
            record TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (profile, memory_id)
        ) WITHOUT ROWID;
        CREATE INDEX samples_created ON samples (profile, created_at);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            profile TEXT NOT NULL,
            kind TEXT NOT NULL,
            mode TEXT,
            state TEXT NOT NULL,
            reason TEXT,
            args TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            progress TEXT,
            result TEXT,
            error TEXT,
            run_dir TEXT
        );
        CREATE INDEX jobs_by_state ON jobs (state, profile, kind);
        CREATE TABLE model_versions (
            profile TEXT NOT NULL,
            version INTEGER NOT NULL,
            kind TEXT NOT NULL,
            job_id INTEGER,
            run_dir TEXT,
            path TEXT,
            base TEXT,
            ollama_model TEXT,
            digest TEXT,
            created_at TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (profile, version)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0002_job_retries",
        """
        ALTER TABLE jobs ADD COLUMN retry_of INTEGER;
        ALTER TABLE jobs ADD COLUMN exit_code INTEGER;
        ALTER TABLE jobs ADD COLUMN pid INTEGER;
        """,
    ),
    (
        "0003_lifecycle",
        """
        ALTER TABLE profiles ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE profiles ADD COLUMN current_base TEXT;
        ALTER TABLE profiles ADD COLUMN current_base_job INTEGER;
        CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE schedule_runs (name TEXT PRIMARY KEY, last_run_at TEXT NOT NULL);
        """,
    ),
    (
        "0004_sample_counts_index",
        """
        CREATE INDEX samples_eligible ON samples (profile, excluded, created_at);
        """,
    ),
    (
        "0005_remote_jobs",
        """
        ALTER TABLE jobs ADD COLUMN remote TEXT;
        """,
    ),
]
