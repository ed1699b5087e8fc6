"""Servers of ours listen on ports no outgoing connection can have taken first."""

from __future__ import annotations

import socket

from kalshi_pipeline.ports import _ephemeral_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_listened_on() -> None:
    start = _ephemeral_start()
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= p < start for p in ports)
    assert len(ports) > 1  # picked at random: parallel tests do not all get the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))
        s.listen()


def test_a_port_someone_listens_on_is_never_given() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        assert all(free_port() != taken for _ in range(200))
