"""Where tuning state lives: an Optuna storage named by one URL.

* `journal:PATH` (or a bare path ending in `.journal`): Optuna's journal file, embedded, no
  server, safe for several processes on one machine. The default is `<out>/studies.journal`.
  It is checked on open and its damaged tail repaired (`journal.py`).
* `sqlite:///PATH`: one process at a time (SQLite races when many workers write).
* `postgresql://user:pass@host:port/db` (any SQLAlchemy URL): workers on many machines share it.

`open_storage` connects at once, so a malformed or unreachable URL is an `ArenaError` before
any training starts.
"""
from __future__ import annotations

import re
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from .errors import ArenaError
from .journal import GuardedJournal, check_journal

DEFAULT_FILE = "studies.journal"
_RDB = re.compile(r"^(sqlite|postgresql|postgres|mysql|mariadb|oracle|mssql)(\+\w+)?://")


def default_url(out: Path) -> str:
    return f"journal:{Path(out).resolve() / DEFAULT_FILE}"


def redact(url: str) -> str:
    """`url` with any password replaced by ***, for logs and reports."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str) -> BaseStorage:
    """The Optuna storage behind `url` (see the module docstring for the accepted forms)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not isinstance(url, str) or not url.strip():
        raise ArenaError(f"storage URL must be a non-empty string, got {url!r}")
    url = url.strip()
    if url.startswith("journal:") or (("://" not in url) and url.endswith((".journal", ".log"))):
        path = Path(url[len("journal:"):] if url.startswith("journal:") else url).expanduser()
        if path.is_dir():
            raise ArenaError(f"storage {url!r} names a directory; give a journal file path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            check_journal(path)
            return JournalStorage(GuardedJournal(path))
        except OSError as err:
            raise ArenaError(f"cannot open journal storage {path}: {err}") from None
    for bare in ("postgres://", "postgresql://"):  # pin the driver the arena extra installs (psycopg 3)
        if url.startswith(bare):
            url = "postgresql+psycopg://" + url[len(bare):]
    if not _RDB.match(url):
        raise ArenaError(
            f"malformed storage URL {redact(url)!r}: use journal:PATH, a PATH ending in .journal, "
            "sqlite:///PATH or postgresql://user:password@host:port/database"
        )
    engine_kwargs = {}
    if url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    except ModuleNotFoundError as err:
        raise ArenaError(f"storage {redact(url)!r} needs the database driver {err.name!r}: "
                         "pip install 'optarena[arena]' (psycopg 3 for PostgreSQL)") from None
    except Exception as err:  # sqlalchemy errors: unreachable server, bad credentials, bad path
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArenaError(f"cannot open storage {redact(url)!r}: {reason}") from None
