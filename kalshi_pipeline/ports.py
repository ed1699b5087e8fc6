"""A loopback port for a server of ours to listen on later (the bench's and the tests' owners).

A port the kernel hands out for `bind(0)` comes from its ephemeral range, the same range every
outgoing connection takes its source port from: on a machine making thousands of loopback
connections (a test suite, a bench run), one of them can take that port before our server binds
it. So the port is picked at random below the ephemeral range, where only servers bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(attempts: int = 200) -> int:
    """A loopback port nobody listens on right now, outside the ephemeral range when it can."""
    top = _ephemeral_start()
    if top - LOWEST >= 1_000:
        for port in random.sample(range(LOWEST, top), min(attempts, top - LOWEST)):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # an unusual range setting: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
