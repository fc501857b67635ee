"""Parse untrusted documents in a child process, under time and memory limits.

A hostile document must cost a worker one failed document, not the worker: a 0.6 MB DOCX that
unpacks to 200 MB once drove a worker from 0.7 to 8.3 GB, and SIGTERM did nothing because
the parse sat in C code holding the GIL. :func:`parse_guarded` therefore

* checks what can be checked before any work (ZIP central directory, PDF page count) and the
  extracted text's size after it (:class:`ParseLimits`, enforced by the parsers);
* runs the parse in a child process with an address-space rlimit, a CPU rlimit and a
  wall-clock deadline, and kills it on timeout; the parent only waits on a pipe, so it stays
  responsive to signals;
* makes sure the child dies with its caller: the caller kills it on any exit from the wait
  (exception, SystemExit from a signal handler, interpreter exit), and the child asks the
  kernel for SIGKILL when its own parent goes (``PR_SET_PDEATHSIG``; see _die_with_parent for
  the fork-server chain), which covers a caller killed outright (SIGKILL, or SIGTERM with the
  default action).

Children come from a ``forkserver`` (``spawn`` where there is none), never a plain ``fork``:
the worker runs torch threads, and forking a threaded process can deadlock the child. The
fork server preloads the parser libraries, so each document costs a fork, not an interpreter
start: about 7-14 ms a document on a 2-core machine (small PDF 1 ms -> 12 ms, small DOCX
6 ms -> 20 ms, small HTML 0.3 ms -> 12 ms), plus ~0.5 s once per process to start the server.
As with any ``spawn``/``forkserver`` use, the caller's ``__main__`` module is re-imported in
each child (Python 3.11 does not preload it), so it must be import-safe (the
``if __name__ == "__main__":`` idiom) and cheap: ``manage.py`` and ``python -m`` entry
points are.

Small inputs whose parser is ``bounded`` (plain text, Markdown, JSON: linear-time, pure
Python) are parsed in the calling process: a child would cost hundreds of times their parse.

The child answers in JSON, never pickle, so nothing a compromised parser sends can run code
in the worker. The child is not a security sandbox beyond that (same user, same files).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from raftweb.ingest.parsers import registry
from raftweb.ingest.types import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    ParserOutOfMemory,
    ParseTimeout,
    Section,
    human_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_LIMITS = ParseLimits()

# Imported once by the fork server so that each forked child starts with them loaded
# ("__main__" is the standard library's default preload, kept as is).
_PRELOAD = ["__main__", "raftweb.ingest.guard", "pypdf", "docx", "trafilatura", "lxml.etree"]

# How long a child that has answered gets to exit by itself before it is killed.
_EXIT_GRACE_S = 2.0


def parse_guarded(
    data: bytes, filename: str = "", *, limits: ParseLimits | None = None
) -> ParsedDocument:
    """Like :func:`raftweb.ingest.parse_bytes`, but safe against hostile documents.

    Raises a :class:`ParseError` subclass whose message is user-facing: the parsers' own
    errors unchanged, :class:`TooLarge` (ZIP size/members/ratio, pages, characters),
    :class:`ParseTimeout` and :class:`ParserOutOfMemory` for the limits, and a plain
    :class:`ParseError` when the parser process died without an answer. Thread-safe: each call
    has its own child.
    """
    limits = limits or DEFAULT_LIMITS
    if len(data) <= limits.inline_max_bytes:
        # Detection of a small input is cheap and bounded (magic bytes, a ZIP directory of at
        # most inline_max_bytes, text sniffing); it decides whether a child is needed at all.
        parser, text = registry.detect(data, filename)
        if parser.bounded:
            return registry.parse_detected(parser, data, text, filename, limits=limits)
    return _parse_in_child(data, filename, limits)


# --------------------------------------------------------------------------- parent side
_context: BaseContext | None = None
_context_lock = threading.Lock()
_live: set[BaseProcess] = set()
_live_lock = threading.Lock()


def _mp_context() -> BaseContext:
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("forkserver")
                # Process-wide setting; it only takes effect if the server is not running yet.
                ctx.set_forkserver_preload(_PRELOAD)
            else:
                ctx = multiprocessing.get_context("spawn")
            _context = ctx
        return _context


def _parse_in_child(data: bytes, filename: str, limits: ParseLimits) -> ParsedDocument:
    ctx = _mp_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child_main,
        args=(sender, data, filename, limits),
        name=f"raftweb-parse {filename}"[:60],
        daemon=True,  # multiprocessing's own exit handler terminates daemonic children too
    )
    try:
        with _live_lock:
            process.start()
            _live.add(process)
    finally:
        sender.close()  # the child holds the only write end: EOF on the pipe == child gone
    answered = False
    try:
        outcome = _wait_for(process, receiver, limits)
        answered = True
    finally:
        # Any way out of the wait (timeout, SystemExit raised by a SIGTERM handler,
        # KeyboardInterrupt) ends the child; one that answered may first exit by itself.
        receiver.close()
        exitcode = _stop(process, grace=_EXIT_GRACE_S if answered else 0.0)
    return _result(outcome, exitcode, filename, limits)


def _wait_for(
    process: BaseProcess, receiver: Connection, limits: ParseLimits
) -> dict[str, Any] | None:
    """The child's message, None if it died silently; ParseTimeout after ``max_seconds``."""
    deadline = time.monotonic() + limits.max_seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ParseTimeout(f"document took longer than {limits.max_seconds:g} s to parse")
        ready = wait([receiver, process.sentinel], timeout=remaining)
        if receiver in ready or (ready and receiver.poll(0)):
            try:
                # JSON, not pickle: nothing the child sends can run code in this process.
                return json.loads(receiver.recv_bytes(_max_message_bytes(limits)))
            except (EOFError, OSError, ValueError):
                return None
        if process.sentinel in ready:
            return None


def _max_message_bytes(limits: ParseLimits) -> int:
    # The text (<= max_chars, at most 4 UTF-8 bytes a character), plus titles and JSON framing.
    return 8 * limits.max_chars + (64 << 20)


def _stop(process: BaseProcess, *, grace: float) -> int | None:
    """Make sure the child is gone (reaped); returns its exit code."""
    try:
        if grace > 0:
            process.join(grace)
        if process.exitcode is None:
            process.kill()
            process.join(5)
        exitcode = process.exitcode
    finally:
        with _live_lock:
            _live.discard(process)
    if exitcode is not None:
        process.close()
    return exitcode


def _result(
    outcome: dict[str, Any] | None, exitcode: int | None, filename: str, limits: ParseLimits
) -> ParsedDocument:
    if outcome is not None:
        status = outcome.get("status")
        if status == "ok":
            return _document_from_wire(outcome["document"])
        if status == "error":
            raise _error(outcome["error"], outcome["message"])
        if status == "memory":
            said = outcome.get("message")
            raise ParserOutOfMemory(
                f"parser ran out of memory (limit {human_bytes(limits.max_memory_bytes)})"
                + (f"; the parser said: {said}" if said else "")
            )
        if status == "crash":
            log.warning("parsing %r failed in the child process:\n%s", filename, outcome["trace"])
            error = ParseError(f"the parser failed: {outcome['message']}")
            error.add_note(outcome["trace"])
            raise error
    if exitcode == -signal.SIGXCPU:
        raise ParseTimeout(
            f"document used more than {math.ceil(limits.max_seconds):g} s of CPU time to parse"
        )
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else exitcode
        raise ParseError(
            f"the parser process was killed by {name} before it finished"
            + (" (the machine may be out of memory)" if exitcode == -signal.SIGKILL else "")
        )
    raise ParseError(f"the parser process exited (code {exitcode}) without a result")


@atexit.register
def _kill_live_children() -> None:
    """Interpreter exit (e.g. a worker stopping after SIGTERM) abandons running parses.

    Registered after multiprocessing's own exit handler, so it runs first.
    """
    with _live_lock:
        live = list(_live)
    for process in live:
        try:
            process.kill()
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------- child side
def _child_main(sender: Connection, data: bytes, filename: str, limits: ParseLimits) -> None:
    baseline = _confine(limits)
    outcome: dict[str, Any] = {}
    out_of_memory = False
    try:
        document = registry.parse(data, filename, limits=limits)
        outcome = {"status": "ok", "document": _document_to_wire(document)}
    except MemoryError:
        out_of_memory = True
    except ParseError as exc:
        # Parsers wrap whatever their library raised ("corrupt PDF: ..."), MemoryError included.
        if _caused_by_memory(exc):
            out_of_memory = True
        elif _near_memory_cap(baseline, limits):
            outcome = {"status": "memory", "message": str(exc)[:500]}
        else:
            outcome = {"status": "error", "error": type(exc).__name__, "message": str(exc)}
    except BaseException as exc:  # a parser bug must reach the parent as a message
        message = f"{type(exc).__name__}: {exc}"[:500]
        if _near_memory_cap(baseline, limits):
            outcome = {"status": "memory", "message": message}
        else:
            trace = traceback.format_exc()[-8000:]
            outcome = {"status": "crash", "message": message, "trace": trace}
    if out_of_memory:
        # Built only now: inside the except block the traceback still held the parse's frames,
        # and with them the memory that ran out.
        outcome = {"status": "memory", "message": ""}
    try:
        sender.send_bytes(json.dumps(outcome, ensure_ascii=False).encode())
    except MemoryError:  # the result does not fit twice more under the limit
        outcome = {}
        sender.send_bytes(b'{"status": "memory", "message": ""}')
    finally:
        sender.close()


def _document_to_wire(doc: ParsedDocument) -> dict[str, Any]:
    return {
        "sections": [[s.text, s.page, s.title] for s in doc.sections],
        "kind": doc.kind,
        "title": doc.title,
        "mode": doc.mode,
        "metadata": doc.metadata,
    }


def _document_from_wire(wire: dict[str, Any]) -> ParsedDocument:
    return ParsedDocument(
        sections=[
            Section(text=text, page=page, title=title) for text, page, title in wire["sections"]
        ],
        kind=wire["kind"],
        title=wire["title"],
        mode=wire["mode"],
        metadata=wire["metadata"],
    )


def _error(name: str, message: str) -> ParseError:
    """The child's error rebuilt as the ParseError subclass called ``name`` (the base class
    for a name this process does not know, or one that takes other arguments)."""
    pending: list[type[ParseError]] = [ParseError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            try:
                return cls(message)
            except TypeError:
                break
        pending.extend(cls.__subclasses__())
    return ParseError(message)


def _confine(limits: ParseLimits) -> int:
    """Rlimits and parent-death signal for this (child) process; best effort off Linux.
    Returns the address-space baseline the memory limit is added to."""
    _die_with_parent()
    baseline = _address_space_bytes()
    try:
        import resource
    except ImportError:  # not POSIX
        return baseline
    cap = baseline + limits.max_memory_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # Backstop for the wall-clock deadline: the kernel stops a CPU-bound child even if the
    # parent is gone or stuck. SIGXCPU at the soft limit, SIGKILL at the hard one.
    cpu = math.ceil(limits.max_seconds) + 1
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_hard == resource.RLIM_INFINITY or cpu + 5 <= cpu_hard:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    return baseline


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL us when our parent exits, so no parse outlives its caller.

    With ``spawn`` the parent is the caller. With ``forkserver`` it is the fork server, which
    exits when its "caller alive" pipe reaches EOF, i.e. when the caller is gone; but every
    forked child inherits that pipe's write end, which would keep the server (and so us) alive
    for as long as we run. Closing our copy is what makes the chain work: verified by
    ``test_a_stopped_caller_leaves_no_parse_behind``, which fails without it.
    """
    _close_inherited_alive_pipe()
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent went before the request was made
        os._exit(1)


def _close_inherited_alive_pipe() -> None:
    from multiprocessing import forkserver

    # A private attribute (CPython 3.11-3.13); absent, there is nothing we can close.
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):  # only set in a fork server's child
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def _address_space_bytes() -> int:
    """This process's virtual size now (inherited interpreter, libraries, thread arenas)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_address_space_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _near_memory_cap(baseline: int, limits: ParseLimits) -> bool:
    """Did a failed parse come close to the memory limit?

    C libraries report a failed allocation in their own words (libxml2 under python-docx says
    "unknown error"), so a failure after using over half the budget is blamed on the limit:
    buffers grow by doubling, so the request that failed was about as big as what was held.
    """
    peak = _peak_address_space_bytes()
    return bool(baseline and peak) and peak - baseline >= limits.max_memory_bytes // 2


def _caused_by_memory(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
