"""Running the application with uvicorn on a socket bound here (so a busy port is reported before the model loads)."""

import errno
import socket

import uvicorn

from ..errors import UserInputError


GRACEFUL_SHUTDOWN_SECONDS = 30


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. A clear error when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = "the port is in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
        raise UserInputError(f"--host {host} --port {port}: cannot listen there ({reason})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for `app`. On SIGINT/SIGTERM it stops accepting, lets running replies finish for up to
    GRACEFUL_SHUTDOWN_SECONDS, then ends the rest and the generation worker (the app's lifespan)."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        access_log=log_level == "debug",
    )
    return uvicorn.Server(config)
