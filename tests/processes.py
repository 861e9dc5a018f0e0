"""Processes by id, from /proc: what a test started, and everything that started from it.

Ray starts processes in new process groups (so ``killpg`` misses them) but they keep the
session of the process that started Ray, so tests start their Ray-using processes with
``start_new_session=True`` and account for them by session id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    session: int
    state: str
    command: str


def _proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return Proc(pid, int(fields[3]), fields[0], command.strip())


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def session_processes(session: int, ray_tmpdir: str | None = None) -> list[Proc]:
    """Live (non-zombie) processes of a session, and (given a private RAY_TMPDIR) anything
    running with it, in case a Ray process left the session."""
    found = []
    marker = ray_tmpdir.encode() if ray_tmpdir else None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        proc = _proc(int(entry))
        if proc is None or proc.state == "Z":
            continue
        ours = proc.session == session or bool(ray_tmpdir and ray_tmpdir in proc.command)
        if ours or (marker is not None and _environ_has(proc.pid, marker)):
            found.append(proc)
    return found


def alive(proc: Proc) -> bool:
    """Still the same process (pid not reused), and not a zombie."""
    now = _proc(proc.pid)
    return now is not None and now.state != "Z" and now.command == proc.command


def stop_session(session: int, grace: float = 15.0) -> list[Proc]:
    """SIGTERM every process of the session, then SIGKILL, by pid, what outlives ``grace``.
    Returns the processes that had to be killed."""
    for proc in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = session_processes(session)
    for proc in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    return leftovers
