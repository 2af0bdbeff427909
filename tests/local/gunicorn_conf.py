"""gunicorn hooks (``-c python:tests.local.gunicorn_conf``).

A watchdog thread in the master stops the server gracefully when the
process that started it is gone or when its lifetime is over, so a test
run that crashes or is killed never leaves a Glance behind
(:data:`~tests.local.envvars.PARENT_PID`,
:data:`~tests.local.envvars.MAX_LIFETIME`).  Workers already exit
when the master goes away (gunicorn checks their parent).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from tests.local import envvars

#: gunicorn 23+ opens a control socket in ``~/.gunicorn`` by default,
#: shared by every server of the user: concurrent servers would clash.
#: (Older gunicorn ignores unknown settings of a config module.)
control_socket_disable = True

#: Seconds between two checks of the watchdog.
POLL_INTERVAL = 0.5


def _max_lifetime() -> float | None:
    raw = os.environ.get(envvars.MAX_LIFETIME, '').strip()
    value = float(raw) if raw else 0.0
    return value if value > 0 else None


def _watch(log: Any, parent: int, lifetime: float | None) -> None:
    started = time.monotonic()
    while True:
        time.sleep(POLL_INTERVAL)
        if os.getppid() != parent:
            reason = f'parent process {parent} is gone'
            break
        if lifetime is not None and time.monotonic() - started > lifetime:
            reason = f'maximum lifetime of {lifetime:g} s reached'
            break
    log.info('instance-aware watchdog: %s, stopping', reason)
    os.kill(os.getpid(), signal.SIGTERM)


def when_ready(server: Any) -> None:
    """gunicorn hook, in the master once the sockets are bound."""
    parent = int(os.environ.get(envvars.PARENT_PID) or os.getppid())
    threading.Thread(target=_watch, name='instance-aware-watchdog',
                     args=(server.log, parent, _max_lifetime()),
                     daemon=True).start()
