"""Which process wrote a record, and whether it is known to be gone.

A process is named by (host, PID namespace, pid). Only a process on this host and in this PID
namespace can be checked; any other one is taken to be alive (heartbeats decide for those).
"""
from __future__ import annotations

import os
import socket


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def this_process() -> list:
    """[host, PID namespace, pid] of this process, as stored on trials and studies."""
    return [socket.gethostname(), pid_namespace(), os.getpid()]


def gone(host: str, namespace: int, pid: int) -> bool:
    """True only if that process ran here (same host and PID namespace), is not this process, and has exited."""
    here = host == socket.gethostname() and namespace == pid_namespace()
    return here and int(pid) != os.getpid() and not process_alive(int(pid))
