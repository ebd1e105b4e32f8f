"""Wire protocol between coordinator, agents and peers: framed msgpack over TCP.

A frame is a 4-byte big-endian length followed by a msgpack map (msgpack decodes plain data
only: nothing in a frame can make the receiver run code). Bulk object bytes follow a header
frame raw, so they can be streamed with ``socket.sendfile`` (zero-copy) and received straight
into a file.

Authentication (mutual, per connection, before any request is read):

1. server -> ``{"op": "hello", "version", "name", "nonce": 32 random bytes}``
2. client -> ``{"op": "auth", "nonce": 32 random bytes, "mac": HMAC(secret, "client" | sn | cn)}``
3. server -> ``{"ok": true, "mac": HMAC(secret, "server" | cn | sn)}`` or ``{"ok": false}`` + close

A recorded handshake cannot be replayed: every connection gets a fresh server nonce. Frames
before authentication are capped at :data:`MAX_PREAUTH_FRAME` bytes so a peer without the
secret cannot make the agent buffer much either.

Per-message integrity after the handshake: both sides derive two session keys from the
secret and both nonces (one per direction) and every later frame carries
``HMAC-SHA256(key, sequence number | payload)`` after its payload. A frame altered, dropped,
reordered, replayed or injected by anyone on the path fails the check and the connection is
closed. Bulk object bytes that follow a header are not MAC'd themselves: the header carries
their size and checksum (MAC'd), and the receiver verifies the bytes against them. Frames are
not encrypted (see docs/reliability.md for the trust model).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import msgpack

from sonic import __version__
from sonic.errors import AuthenticationError, PeerClosedError, TransportError

MAX_PREAUTH_FRAME = 1024
MAX_FRAME = 8 * 1024 * 1024
NONCE_BYTES = 32
TAG_BYTES = 32
FRAME_LENGTH = struct.Struct("!I")  # every frame starts with its payload length
_SEQ = struct.Struct("!Q")


@dataclass
class _Session:
    """Keys and sequence numbers of one authenticated connection (one per direction)."""

    send_key: bytes
    recv_key: bytes
    send_seq: int = 0
    recv_seq: int = 0


# Authenticated sockets -> their session; entries vanish with their sockets.
_sessions: weakref.WeakKeyDictionary[socket.socket, _Session] = weakref.WeakKeyDictionary()
_sessions_lock = threading.Lock()


def _session(sock: socket.socket) -> _Session | None:
    with _sessions_lock:
        return _sessions.get(sock)


def _start_session(sock: socket.socket, secret: bytes, server_nonce: bytes, client_nonce: bytes,
                   *, server: bool) -> None:
    base = hmac.new(secret, b"session|" + server_nonce + b"|" + client_nonce, hashlib.sha256).digest()
    c2s = hmac.new(base, b"client-to-server", hashlib.sha256).digest()
    s2c = hmac.new(base, b"server-to-client", hashlib.sha256).digest()
    with _sessions_lock:
        _sessions[sock] = _Session(send_key=s2c, recv_key=c2s) if server else _Session(send_key=c2s, recv_key=s2c)


def _tag(key: bytes, seq: int, payload: bytes) -> bytes:
    return hmac.new(key, _SEQ.pack(seq) + payload, hashlib.sha256).digest()


def mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + b"|" + first + b"|" + second, hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int, peer: str, *, frame_start: bool = False) -> bytes:
    """``n`` bytes from ``sock``; a close raises TransportError, or :class:`PeerClosedError`
    when ``frame_start`` says nothing of a frame was expected yet and nothing came."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            error = PeerClosedError if frame_start and got == 0 else TransportError
            raise error(f"{peer} closed the connection ({got}/{n} bytes of a frame received)")
        got += k
    return bytes(buf)


# The frame codec, shared by the network protocol and the agent <-> worker pipe
# (sonic.runtime.worker): a 4-byte big-endian length, then a msgpack map (then, on an
# authenticated connection only, the payload's MAC tag inside the length).


def encode_doc(doc: dict[str, Any]) -> bytes:
    """A frame's msgpack payload."""
    payload: bytes = msgpack.packb(doc, use_bin_type=True)
    return payload


def length_prefixed(payload: bytes) -> bytes:
    """The bytes of one frame carrying ``payload``."""
    return FRAME_LENGTH.pack(len(payload)) + payload


def decode_doc(raw: bytes, peer: str, *, limit: int | None = MAX_FRAME) -> dict[str, Any]:
    """The map a frame's payload holds; ``limit`` caps its strings and binaries (``None``: the
    payload's own length, msgpack's default, for the trusted worker pipe)."""
    limits = {} if limit is None else {"max_bin_len": limit, "max_str_len": limit}
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True, **limits)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise TransportError(f"{peer} sent a frame that is not valid msgpack ({exc}); closing") from None
    if not isinstance(doc, dict):
        raise TransportError(f"{peer} sent a {type(doc).__name__} frame; every frame must be a map")
    return doc


def sealed_frame(sock: socket.socket, doc: dict[str, Any]) -> bytes:
    """The bytes of the next frame on ``sock``: MAC'd (and counted) once the connection is
    authenticated, plain before."""
    payload = encode_doc(doc)
    session = _session(sock)
    if session is not None:
        payload += _tag(session.send_key, session.send_seq, payload)
        session.send_seq += 1
    return length_prefixed(payload)


def send_frame(sock: socket.socket, doc: dict[str, Any]) -> None:
    sock.sendall(sealed_frame(sock, doc))


def recv_frame(sock: socket.socket, peer: str, *, limit: int = MAX_FRAME) -> dict[str, Any]:
    (length,) = FRAME_LENGTH.unpack(recv_exact(sock, FRAME_LENGTH.size, peer, frame_start=True))
    if length > limit:
        raise TransportError(f"{peer} sent a {length}-byte frame, above the {limit}-byte limit; closing")
    raw = recv_exact(sock, length, peer)
    session = _session(sock)
    if session is not None:
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if length < TAG_BYTES or not hmac.compare_digest(tag, _tag(session.recv_key, session.recv_seq, payload)):
            raise AuthenticationError(f"{peer} sent a frame that failed its integrity check (altered, replayed or "
                                      "out of order on the way); closing the connection")
        session.recv_seq += 1
        raw = payload
    return decode_doc(raw, peer, limit=limit)


def server_handshake(sock: socket.socket, secret: bytes, name: str, peer: str) -> None:
    """Authenticate a client; raise AuthenticationError (after telling it) if it fails."""
    server_nonce = os.urandom(NONCE_BYTES)
    send_frame(sock, {"op": "hello", "version": __version__, "name": name, "nonce": server_nonce})
    doc = recv_frame(sock, peer, limit=MAX_PREAUTH_FRAME)
    client_nonce = doc.get("nonce")
    client_mac = doc.get("mac")
    if (doc.get("op") != "auth" or not isinstance(client_nonce, bytes) or len(client_nonce) != NONCE_BYTES
            or not isinstance(client_mac, bytes)):
        send_frame(sock, {"ok": False, "error": "expected an auth frame"})
        raise AuthenticationError(f"{peer} did not send a well-formed auth frame")
    if not hmac.compare_digest(client_mac, mac(secret, b"client", server_nonce, client_nonce)):
        send_frame(sock, {"ok": False, "error": "authentication failed"})
        raise AuthenticationError(f"{peer} failed authentication (wrong cluster secret)")
    send_frame(sock, {"ok": True, "mac": mac(secret, b"server", client_nonce, server_nonce)})
    _start_session(sock, secret, server_nonce, client_nonce, server=True)


def client_handshake(sock: socket.socket, secret: bytes, peer: str) -> dict[str, Any]:
    """Authenticate to an agent and verify it knows the secret too; return its hello."""
    hello = recv_frame(sock, peer, limit=MAX_PREAUTH_FRAME)
    server_nonce = hello.get("nonce")
    if hello.get("op") != "hello" or not isinstance(server_nonce, bytes):
        raise TransportError(f"{peer} is not a Sonic agent (unexpected greeting)")
    client_nonce = os.urandom(NONCE_BYTES)
    send_frame(sock, {"op": "auth", "nonce": client_nonce, "mac": mac(secret, b"client", server_nonce, client_nonce)})
    reply = recv_frame(sock, peer, limit=MAX_PREAUTH_FRAME)
    if not reply.get("ok"):
        raise AuthenticationError(
            f"agent {peer} refused our credentials; check that the cluster file's secret_file matches the agent's"
        )
    server_mac = reply.get("mac")
    if not isinstance(server_mac, bytes) or not hmac.compare_digest(
        server_mac, mac(secret, b"server", client_nonce, server_nonce)
    ):
        raise AuthenticationError(f"agent {peer} could not prove it holds the cluster secret; refusing to talk to it")
    _start_session(sock, secret, server_nonce, client_nonce, server=False)
    return hello


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a cluster secret file (hex). Refuses files readable by group/others."""
    try:
        st = os.stat(path)
        text = open(path).read().strip()
    except OSError as exc:
        raise AuthenticationError(f"cannot read cluster secret {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise AuthenticationError(f"cluster secret {path} is readable by others; run `chmod 600 {path}`")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise AuthenticationError(f"cluster secret {path} is not hex; recreate the cluster") from None
    if len(secret) < 16:
        raise AuthenticationError(f"cluster secret {path} is shorter than 16 bytes; recreate the cluster")
    return secret
