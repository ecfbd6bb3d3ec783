"""A real TCP server on 127.0.0.1 that accepts and then says nothing (or only an SSH
banner), as an SSH server on a board that is powering off or hangs does."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stalled_server(banner: bool) -> Iterator[int]:
    """Yields the port of a server that holds every connection open, silent, after sending
    an SSH banner if ``banner``; the connections close when the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if banner:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()
