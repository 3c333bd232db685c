"""The gunicorn worker the dashboard is served with: gthread whose client sockets give up on a read
that waits too long, so slow clients (a header sent a byte at a time, a body that never comes)
cannot hold the worker threads and starve everyone else (/healthz included).

gthread hands a connection to a thread once it is readable and the thread then reads the request
with a blocking socket. Here every client socket is re-made as a `ReadTimeoutSocket`, whose
"blocking" mode is a timeout of READ_TIMEOUT_S: a read (or a send to a client that stopped reading)
that waits longer ends that connection, never the worker. Imports neither dash nor torch.
"""

from __future__ import annotations

import socket

from gunicorn.workers.gthread import ThreadWorker

# Longest wait for one read from (or one send to) a client. A send includes a whole response: the
# compressed page scripts (~0.8 MB) take far less than this on any link a dashboard is used over.
READ_TIMEOUT_S = 30.0


class ReadTimeoutSocket(socket.socket):
    """A client socket whose blocking mode is a timeout (gunicorn sets blocking mode itself)."""

    timeout_s = READ_TIMEOUT_S

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.timeout_s)
        else:
            super().setblocking(False)

    @classmethod
    def wrap(cls, sock: socket.socket) -> ReadTimeoutSocket:
        if isinstance(sock, cls):
            return sock
        blocking = sock.gettimeout() != 0.0
        twin = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        twin.setblocking(blocking)
        return twin


class SlowClientSafeWorker(ThreadWorker):
    """gthread with ReadTimeoutSocket client sockets (see the module docstring)."""

    def enqueue_req(self, conn):
        if type(conn.sock) is socket.socket:  # a plain client socket (TLS sockets are left as they are)
            conn.sock = ReadTimeoutSocket.wrap(conn.sock)
        return super().enqueue_req(conn)
