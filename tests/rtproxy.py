"""A loopback TCP proxy that counts memcached round trips.

A round trip is a burst of bytes from a client that follows a reply from the
server (or opens the connection). Pipelined commands sent together count once;
a client that waits for an answer before sending more counts twice. Counting
happens on the wire, so no client-side shortcut can fool it.
"""

from __future__ import annotations

import selectors
import socket
import threading


class RoundTripProxy:
    """Forwards 127.0.0.1:<port> to a memcached server, counting round trips."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._round_trips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._round_trips

    def reset(self) -> None:
        with self._lock:
            self._round_trips = 0

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        # For each client socket: [peer socket, awaiting_reply]; the flag is
        # shared by the pair so a client burst counts once until the server answers.
        pairs: dict[socket.socket, tuple[socket.socket, list[bool], bool]] = {}
        while not self._stop.is_set():
            try:
                events = sel.select(timeout=0.05)
            except (OSError, ValueError):
                break
            for key, _ in events:
                sock = key.fileobj
                if sock is self._listener:
                    try:
                        client, _ = self._listener.accept()
                        server = socket.create_connection(self.target, timeout=5)
                    except OSError:
                        continue
                    for s in (client, server):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    state = [False]
                    pairs[client] = (server, state, True)
                    pairs[server] = (client, state, False)
                    sel.register(client, selectors.EVENT_READ, None)
                    sel.register(server, selectors.EVENT_READ, None)
                    continue
                assert isinstance(sock, socket.socket)
                peer, state, from_client = pairs[sock]
                try:
                    data = sock.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    for s in (sock, peer):
                        sel.unregister(s)
                        s.close()
                        pairs.pop(s, None)
                    continue
                if from_client and not state[0]:
                    with self._lock:
                        self._round_trips += 1
                    state[0] = True
                elif not from_client:
                    state[0] = False
                peer.sendall(data)
        for s in list(pairs):
            s.close()
        sel.close()
