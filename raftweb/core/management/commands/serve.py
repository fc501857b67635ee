"""`manage.py serve`: what `make run` runs. Migrates, creates the first admin account (and
prints its password once), then runs the ASGI server (daphne) and a Huey worker as child
processes; Ctrl-C or SIGTERM stops both, and if either dies the other is stopped too, so
a half-running app never hides behind a live web page."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from raftweb.core.services import admin_bootstrap, profiles_ensure

STOP_GRACE_S = 10.0


class Command(BaseCommand):
    help = "Run RAFTweb: web server (ASGI, HTTP + WebSockets) and background worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="serve the web app only")
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        try:
            profiles_ensure()
        except ValueError as exc:  # a malformed RAFTWEB_<ROLE>_* variable: name it and stop
            raise CommandError(str(exc)) from None
        self._announce_admin()
        children = self._start_children(opts)
        self.stdout.write(
            f"RAFTweb is running at http://{opts['host']}:{opts['port']}/ "
            f"(data in {settings.DATA_DIR}); press Ctrl-C to stop."
        )
        self.stdout.flush()
        code = self._supervise(children)
        sys.exit(code)

    def _announce_admin(self) -> None:
        created = admin_bootstrap()
        if created:
            username, password = created
            self.stdout.write(self.style.SUCCESS("Created the admin account:"))
            self.stdout.write(f"  username: {username}\n  password: {password}")
            self.stdout.write("  (shown once; change it with `python manage.py changepassword`)")
        else:
            self.stdout.write("Admin account exists (its password was printed on first run).")

    def _start_children(self, opts: dict[str, Any]) -> dict[str, subprocess.Popen[bytes]]:
        web = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            opts["host"],
            "-p",
            str(opts["port"]),
            "--proxy-headers",
            "raftweb.asgi:application",
        ]
        # Each child in its own process group: a terminal's Ctrl-C (SIGINT to the whole
        # foreground group) reaches only this supervisor, which stops the children with SIGTERM.
        # A worker that got the SIGINT itself would treat it as Huey's graceful stop - finish
        # every running task first, a generation job included - ignore the SIGTERM that follows,
        # and be killed STOP_GRACE_S later still holding its job.
        children = {"web": subprocess.Popen(web, process_group=0)}
        if not opts["no_worker"]:
            children["worker"] = subprocess.Popen(
                [sys.executable, "manage.py", "run_huey", "--quiet"],
                cwd=str(settings.BASE_DIR),
                process_group=0,
            )
        return children

    def _supervise(self, children: dict[str, subprocess.Popen[bytes]]) -> int:
        stopping = False

        def on_signal(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        # Closing the terminal (SIGHUP) no longer reaches the children either: stop them too.
        signal.signal(signal.SIGHUP, on_signal)
        code = 0
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    self.stderr.write(
                        f"The {name} process exited with code {proc.returncode}; stopping."
                    )
                    code = proc.returncode or 1
                    stopping = True
                    break
            time.sleep(0.2)
        self._stop(children)
        self.stdout.write("RAFTweb stopped.")
        return code

    def _stop(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
