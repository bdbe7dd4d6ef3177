"""Optuna's journal file, checked before use and never extended past a torn record.

Optuna's `JournalFileBackend` keeps one JSON record per line and replays them all on open. A
crash or a full disk in the middle of an append leaves a torn last record (no end of line); the
next append would then glue its record onto it, and from there on every reader fails on that
line. So:

* `check_journal` (run by `storage.open_storage`) scans the file. Damage confined to the tail (a
  torn last record, or unparseable lines with no valid record after them: garbage appended) is
  repaired: the file is copied byte for byte to `<name>.damaged-<time>` (never over an earlier
  copy), the tail is cut off, and a warning on stderr names the file, the line and the copy.
  Damage followed by valid records is not guessed at: an `ArenaError` names the file and line.
* `GuardedJournal.append_logs` cuts a torn tail another process left behind (the same way)
  before it appends, and undoes its own partial write when a write fails (disk full).

Both change the file only while holding Optuna's own lock on it (`<file>.lock`), which every
writer holds while it appends, so a record being written by a live worker is never mistaken
for damage. What the cut records had done is redone by the worker: `worker.fail_stale` hands
back trials left RUNNING, `worker.reconcile` enqueues configurations left without a trial, and
`plan.create_studies` fills in studies whose creation was cut short.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from .errors import ArenaError

BACKUP_INFIX = ".damaged-"
TORN = "a record cut short, with no end of line"


@dataclass(frozen=True)
class Damage:
    """The first bad line of a journal: its number (1-based), byte offset and what is wrong;
    `tail`: no valid record follows it; `next_good`: the first valid line after it, if any."""

    line: int
    offset: int
    reason: str
    tail: bool
    next_good: int | None = None


@dataclass(frozen=True)
class Repair:
    """A repaired tail: where the damage started, the copy kept, and how much was cut."""

    path: Path
    damage: Damage
    backup: Path
    lines: int
    size: int


def _problem(line: bytes, ended: bool) -> str | None:
    if not ended:
        return TORN
    try:
        record = json.loads(line)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return f"not JSON: {err}"
    if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
        return "not an Optuna journal record"
    return None


def scan(data: bytes) -> Damage | None:
    """The first damaged line of the journal content `data` (None: every line is a record)."""
    pos, number, bad = 0, 0, None
    while pos < len(data):
        end = data.find(b"\n", pos)
        number += 1
        problem = _problem(data[pos:] if end < 0 else data[pos:end], end >= 0)
        if problem is not None and bad is None:
            bad = Damage(number, pos, problem, tail=True)
        elif problem is None and bad is not None:
            return Damage(bad.line, bad.offset, bad.reason, tail=False, next_good=number)
        pos = len(data) if end < 0 else end + 1
    return bad


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold Optuna's lock on the journal `path` (the one every writer holds while it appends)."""
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _backup(path: Path, data: bytes) -> Path:
    """Write `data` to a new `<path>.damaged-<time>[-k]` next to `path` (never over an existing file)."""
    stem = f"{path.name}{BACKUP_INFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 1000):
        target = path.with_name(stem if k == 1 else f"{stem}-{k}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:  # a full disk, most likely: repair nothing without a complete copy
            target.unlink(missing_ok=True)
            raise ArenaError(f"cannot keep a copy of the damaged journal {path} before repairing it ({err}); "
                             "free some disk space and rerun") from None  # fmt: skip
        return target
    raise ArenaError(f"cannot keep a copy of the damaged journal {path}: 999 copies named {stem}* exist; "
                     "move some away and rerun")  # fmt: skip


def _cut(path: Path, data: bytes, damage: Damage) -> Repair:
    """Keep a copy of `data` (the whole file), cut the file at the damage and say so on stderr.
    The caller holds the lock."""
    backup = _backup(path, data)
    with open(path, "r+b") as f:
        f.truncate(damage.offset)
        f.flush()
        os.fsync(f.fileno())
    repair = Repair(path, damage, backup, data.count(b"\n", damage.offset) + (not data.endswith(b"\n")),
                    len(data) - damage.offset)  # fmt: skip
    print(f"optarena: warning: the journal {path} is damaged from line {damage.line} on ({damage.reason}), as a "
          f"crash or a full disk leaves it: kept the file as it was in {backup} and removed those {repair.lines} "
          f"line(s) ({repair.size} bytes); the work they recorded will be run again",
          file=sys.stderr, flush=True)  # fmt: skip
    return repair


def _middle(path: Path, damage: Damage) -> ArenaError:
    copies = sorted(p.name for p in path.parent.glob(f"{path.name}{BACKUP_INFIX}*"))
    kept = f" (copies kept by earlier repairs: {', '.join(copies)})" if copies else ""
    return ArenaError(
        f"the journal {path} is damaged at line {damage.line} ({damage.reason}) and valid records follow it "
        f"(line {damage.next_good}), so it cannot be repaired without guessing: restore a copy taken before the "
        f"damage{kept}, or move {path.name} away to start the run over"
    )


def check_journal(path: str | os.PathLike) -> Repair | None:
    """Check the journal at `path`: None if sound (or absent); a `Repair` if its damaged tail was
    cut off; `ArenaError` if it is damaged before its last valid record."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ArenaError(f"cannot read the journal {path}: {err}") from None
    if scan(data) is None:
        return None
    with locked(path):  # a live writer may have been halfway through a record: look again, alone
        data = path.read_bytes()
        damage = scan(data)
        if damage is None:
            return None
        if not damage.tail:
            raise _middle(path, damage)
        return _cut(path, data, damage)


class GuardedJournal(JournalFileBackend):
    """`JournalFileBackend` whose appends start on a fresh line and leave no partial record.

    Under the lock: a torn record at the end (a writer died mid-append) is cut off first (copy
    kept, warning), and a write that fails halfway (disk full) is truncated back before the error
    is raised, so the next append cannot glue onto it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock = JournalFileSymlinkLock(str(self.path))
        super().__init__(str(self.path), lock_obj=self.lock)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        """Optuna's reader; damage that appears while the file is open (a writer that does not
        guard its appends) is an `ArenaError` naming the file and the line, not a bare JSON error."""
        try:
            yield from super().read_logs(log_number_from)
        except ValueError as err:
            damage = scan(self.path.read_bytes())
            where = f"at line {damage.line} ({damage.reason})" if damage else f"({err})"
            raise ArenaError(f"the journal {self.path} was damaged while in use {where}; run the command again: it "
                             "checks the journal on open and repairs it or says what to do") from None  # fmt: skip

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        data = text.encode("utf-8")
        self.lock.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":  # a writer died mid-record: cut that record
                    whole = self.path.read_bytes()
                    end = whole.rfind(b"\n") + 1
                    _cut(self.path, whole, Damage(whole.count(b"\n") + 1, end, TORN, tail=True))
                self._write(fd, end, data)
            finally:
                os.close(fd)
        finally:
            self.lock.release()

    @staticmethod
    def _write(fd: int, end: int, data: bytes) -> None:
        """Write `data` at `end`; a write that stops halfway is cut back. Once every byte is
        written the records are complete and other processes may have read them, so an error
        (or Ctrl-C) during the fsync that follows leaves them in place."""
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], end + done)
        except BaseException:
            try:
                os.ftruncate(fd, end)
                os.fsync(fd)
            except OSError:
                pass
            raise
        os.fsync(fd)
