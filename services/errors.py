"""The root of every error personad raises on purpose.

Each package has one root under :class:`PersonadError`; a caller that only needs to know
"personad refused this, with a reason a person can act on" catches the root, one that
handles a kind of failure catches that package's root. The tree::

    PersonadError
    ├── SettingsError            services.settings: the configuration file or environment
    ├── InvalidProfileName       services.profile_names: a name outside the profile pattern
    ├── BackupError              services.backup: a backup or restore that cannot be done
    ├── LedgerError              services.ledger: the SQLite ledger
    │   └── LedgerUnusable           damaged, or written by a newer personad: start-up stops
    ├── MemoriesError            services.memories: a memory file cannot be parsed
    │   └── RecordError              one record of it
    ├── EmbeddingError           services.embedding: the embedding model
    ├── VectorIndexError         services.index: the Chroma index
    ├── CurationError            services.curation: curation rules, mode configs, samples
    │   ├── ContaminationError       a sample holds another mode's tags
    │   └── DatasetError             services.dataset_build: a run's dataset files
    ├── SchemaError              services.schemas: chat formats and model-family schemas
    ├── TrainingError            services.training: resolving and running a training job
    │   ├── TrainingConfigError      an invalid training setting
    │   ├── ModelInfoError           a base model that cannot be read
    │   └── BadInputError            input the training child refuses (exit code 3)
    ├── LifecycleError           services.lifecycle: a lifecycle setting (a schedule)
    ├── PublishError             services.publish: the local registry and Ollama
    │   └── StaleBase                a candidate trained on a base that is no longer current
    ├── AskError                 services.generation_worker (and services.ask): a question
    │                            that cannot be answered
    ├── ReportError              services.report: a run report
    └── DaemonError              daemon.errors: the daemon process and its CLI
        ├── AlreadyRunning           another daemon holds the state directory
        ├── ControlSocketError       the control socket cannot be set up
        ├── CommandError             a socket command refused, with its error code
        ├── ClientError              the CLI cannot talk to the daemon
        │   ├── DaemonNotRunning
        │   └── CommandFailed
        └── DemoError                ``personad demo`` failed

The training child's ``Cancelled`` (SIGTERM/SIGINT) is a ``BaseException``: it is control
flow that must pass through ``except Exception``, not an error.
"""

from __future__ import annotations


class PersonadError(Exception):
    """Something personad refused or could not do, with a message a person can act on."""
