"""``magma-bench driver``: run queued studies from the database."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer


def driver_command(
    once: Annotated[bool, typer.Option(help="exit when no study is waiting")] = False,
    poll: Annotated[float, typer.Option(help="seconds between polls for new studies")] = 2.0,
) -> None:
    """Claim queued studies (MAGMA_DATABASE_URL) and run them on Ray (RAY_ADDRESS, else local)."""
    from studies.engine.driver import Driver  # Ray, Optuna and torch: only when it runs

    # SIGTERM (docker stop, `magma-bench up` stopping) exits through Python, so atexit
    # shuts the local Ray down; a study left running resumes under the next driver.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Driver(poll_seconds=poll).run(once=once)
