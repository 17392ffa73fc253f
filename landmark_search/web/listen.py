"""The server's listening socket, bound before the server says where it serves: a busy port is one line."""

from __future__ import annotations

import errno
import socket

from ..errors import LandmarkError


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for uvicorn to listen on; LandmarkError naming the port and --port when taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise LandmarkError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        taken = "is in use by another program" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise LandmarkError(f"port {port} on {host} {taken}: choose another with --port "
                            f"(e.g. --port {port + 1 if port < 65535 else 8765})") from None
    return sock
