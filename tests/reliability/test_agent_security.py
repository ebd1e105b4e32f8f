"""A real agent process against raw TCP clients: without the cluster secret nobody can make it
run anything or read any object; malformed, oversized, replayed or path-escaping messages get
a clean refusal (an error reply, or the connection closed) and never a crash, a traceback,
a stray file, or a byte of an object. After every attempt the agent still serves its
legitimate client.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from reliability_helpers import assert_gone, wait_until

from sonic.cluster.readiness import make_secret
from sonic.errors import AuthenticationError
from sonic.runtime import protocol
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.objects import file_checksum

PROJECT = Path(__file__).resolve().parents[2]
HANDSHAKE_TIMEOUT_S = 1.0
JOB = "secjob"
SECRET_BYTES = b"the contents of a private object\n"


@dataclass
class Agent:
    host: str
    port: int
    pid: int
    secret: bytes
    data_dir: Path
    root: Path

    def client(self, secret: bytes | None = None) -> AgentClient:
        return AgentClient(self.host, self.port, secret or self.secret, "sec", Timeouts(connect_s=2, control_s=5))

    def raw(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        return sock

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.data_dir.glob("*.log*"))\
            + "".join(p.read_text(errors="replace") for p in self.data_dir.glob("agent.stdout"))


def agent_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("secure-agent")
    data_dir = root / "data"
    secret_file = root / "secret"
    secret = make_secret(secret_file)
    with open(root / "agent.stdout", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sonic.runtime.agent", "--name", "sec", "--bind", "127.0.0.1", "--port", "0",
             "--data-dir", str(data_dir), "--secret-file", str(secret_file), "--slots", "1",
             "--handshake-timeout", str(HANDSHAKE_TIMEOUT_S)],
            stdout=out, stderr=subprocess.STDOUT, env=agent_env(), start_new_session=True,
        )
    try:
        wait_until(lambda: (data_dir / "agent.json").exists() or proc.poll() is not None, "agent.json")
        assert proc.poll() is None, (root / "agent.stdout").read_text()
        import json

        info = json.loads((data_dir / "agent.json").read_text())
        handle = Agent(info["host"], int(info["port"]), proc.pid, secret, data_dir, root)
        # One private object, put by the legitimate client, for the read attempts below.
        blob = root / "blob"
        blob.write_bytes(SECRET_BYTES)
        client = handle.client()
        client.put_file(JOB, "split/0/private", blob, file_checksum(blob))
        client.close()
        yield handle
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert_gone([proc.pid])
    logs = handle.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert secret.hex() not in logs, "the cluster secret must never be logged"


@pytest.fixture(autouse=True)
def still_serves(agent: Agent) -> Iterator[None]:
    """After every attack the agent is alive and answers its legitimate client."""
    yield
    assert agent_alive(agent.pid)
    client = agent.client()
    try:
        assert client.call("ping")["name"] == "sec"
    finally:
        client.close()


def agent_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ----------------------------------------------------------------------------- raw helpers
def frame(doc: Any) -> bytes:
    payload = msgpack.packb(doc, use_bin_type=True)
    return struct.pack("!I", len(payload)) + payload


def read_hello(sock: socket.socket) -> dict[str, Any]:
    hello = protocol.recv_frame(sock, "agent", limit=protocol.MAX_PREAUTH_FRAME)
    assert hello["op"] == "hello" and len(hello["nonce"]) == protocol.NONCE_BYTES
    return hello


def drain(sock: socket.socket) -> bytes:
    """Everything the agent sends until it closes the connection (or goes quiet)."""
    sock.settimeout(HANDSHAKE_TIMEOUT_S * 4)
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return bytes(got)


def decode_frames(raw: bytes) -> list[dict[str, Any]]:
    docs = []
    while len(raw) >= 4:
        (n,) = struct.unpack("!I", raw[:4])
        docs.append(msgpack.unpackb(raw[4:4 + n], raw=False))
        raw = raw[4 + n:]
    return docs


def authenticated(agent: Agent) -> socket.socket:
    sock = agent.raw()
    protocol.client_handshake(sock, agent.secret, "agent")
    return sock


def call(sock: socket.socket, doc: dict[str, Any]) -> dict[str, Any]:
    protocol.send_frame(sock, doc)   # MAC'd with the session key, as every authenticated frame must be
    return protocol.recv_frame(sock, "agent")


def no_worker_started(agent: Agent) -> bool:
    client = agent.client()
    try:
        return client.call("ping")["workers"] == [] and not (agent.data_dir / "workers.log").exists()
    finally:
        client.close()


RUN = {"op": "run", "job": JOB, "app": "sort", "stage": "split", "index": 0, "num_instances": 1, "inputs": []}


# ----------------------------------------------------------------------------- before authentication
@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                  # a stray HTTP client
    b"\x00\x00\x00\x05\xff\xff\xff\xff\xff",               # not msgpack
    os.urandom(300),                                       # noise
    struct.pack("!I", 2**31) + b"x" * 64,                  # oversized frame header
    struct.pack("!I", protocol.MAX_PREAUTH_FRAME + 1) + b"x" * (protocol.MAX_PREAUTH_FRAME + 1),
    frame([1, 2, 3]),                                      # a frame that is not a map
    frame({1: "int keys"}),                                # non-string map keys
    frame(msgpack.ExtType(42, b"\x00" * 8)),               # an extension type (never decoded to code)
], ids=["http", "bad-msgpack", "noise", "huge-header", "preauth-limit", "list", "int-keys", "ext-type"])
def test_garbage_before_auth_is_dropped(agent: Agent, payload: bytes) -> None:
    sock = agent.raw()
    read_hello(sock)
    sock.sendall(payload)
    answer = drain(sock)
    sock.close()
    for doc in decode_frames(answer):
        assert doc.get("ok") is False  # at most a refusal, never data


@pytest.mark.parametrize("request_doc", [
    RUN,
    {"op": "get", "job": JOB, "key": "split/0/private"},
    {"op": "warm", "app": "sort"},
    {"op": "auth"},                                                   # no nonce, no mac
    {"op": "auth", "nonce": b"\x00" * 32, "mac": b"\x00" * 32},       # a guessed mac
], ids=["run", "get", "warm", "auth-empty", "auth-zero-mac"])
def test_requests_without_the_secret_are_refused(agent: Agent, request_doc: dict[str, Any]) -> None:
    sock = agent.raw()
    read_hello(sock)
    sock.sendall(frame(request_doc))
    answer = drain(sock)
    sock.close()
    docs = decode_frames(answer)
    assert len(docs) == 1 and docs[0]["ok"] is False, docs
    assert SECRET_BYTES not in answer
    assert no_worker_started(agent)


def test_wrong_secret_is_refused_and_the_connection_closed(agent: Agent) -> None:
    client = agent.client(secret=b"w" * 32)
    with pytest.raises(AuthenticationError):
        client.call("ping")
    client.close()
    # By hand: a well-formed auth with the wrong key, then a request on the same socket.
    sock = agent.raw()
    hello = read_hello(sock)
    nonce = os.urandom(32)
    sock.sendall(frame({"op": "auth", "nonce": nonce, "mac": protocol.mac(b"w" * 32, b"client", hello["nonce"], nonce)}))
    sock.sendall(frame(RUN))
    docs = decode_frames(drain(sock))
    sock.close()
    assert docs == [{"ok": False, "error": "authentication failed"}]
    assert no_worker_started(agent)


def test_replayed_handshake_is_refused(agent: Agent) -> None:
    """An eavesdropper records a legitimate auth frame and replays it on a new connection: the
    new connection has a fresh server nonce, so the recorded MAC is worthless."""
    first = agent.raw()
    hello = read_hello(first)
    nonce = os.urandom(32)
    recorded = frame({"op": "auth", "nonce": nonce, "mac": protocol.mac(agent.secret, b"client", hello["nonce"], nonce)})
    first.sendall(recorded)
    assert protocol.recv_frame(first, "agent")["ok"] is True
    first.close()
    replay = agent.raw()
    read_hello(replay)
    replay.sendall(recorded + frame({"op": "get", "job": JOB, "key": "split/0/private"}))
    answer = drain(replay)
    replay.close()
    assert decode_frames(answer) == [{"ok": False, "error": "authentication failed"}]
    assert SECRET_BYTES not in answer


def test_silent_peer_is_cut_off_after_the_handshake_timeout(agent: Agent) -> None:
    sock = agent.raw()
    read_hello(sock)
    sock.settimeout(HANDSHAKE_TIMEOUT_S * 5)
    assert sock.recv(1) == b"", "the agent must close an idle unauthenticated connection"
    sock.close()


def test_truncated_frame_then_hang_up(agent: Agent) -> None:
    sock = agent.raw()
    read_hello(sock)
    sock.sendall(struct.pack("!I", 100) + b"\x81")
    sock.close()


# ----------------------------------------------------------------------------- after authentication
@pytest.mark.parametrize("request_doc,expected", [
    ({"op": "explode"}, "unknown op 'explode'"),
    ({"op": None}, "unknown op None"),
    ({**RUN, "index": "one"}, "Expected `int`, got `str` - at `$.index`"),
    ({**RUN, "index": -1}, "Expected `int` >= 0 - at `$.index`"),
    ({**RUN, "inputs": "all"}, "Expected `array`, got `str` - at `$.inputs`"),
    ({**RUN, "app": ""}, "Expected `str` of length >= 1 - at `$.app`"),
    ({**RUN, "timeout_s": "soon"}, "got `str` - at `$.timeout_s`"),
    ({**RUN, "peer_timeouts": [1, 2]}, "got `array` - at `$.peer_timeouts`"),
    ({**RUN, "inputs": [{"stage": "split"}]}, "malformed 'run' request"),
    ({**RUN, "job": "../../etc"}, "invalid job id"),
    ({**RUN, "stage": "../x"}, "must have the form STAGE/INSTANCE/NAME"),
    ({**RUN, "stage": "-x"}, "invalid stage name"),
    ({"op": "get", "job": JOB, "key": 5}, "Expected `str`, got `int` - at `$.key`"),
    ({"op": "drop", "job": ["x"]}, "Expected `str`, got `array` - at `$.job`"),
    ({"op": "fetch", "job": JOB, "item": "x"}, "Expected `object`, got `str` - at `$.item`"),
], ids=["unknown-op", "null-op", "index-str", "index-negative", "inputs-str", "app-empty", "timeout-str",
        "peer-timeouts-list", "input-incomplete", "job-escape", "stage-escape", "stage-bad", "key-int", "job-list", "item-str"])
def test_malformed_authenticated_requests_get_a_clean_error(agent: Agent, request_doc: dict[str, Any],
                                                            expected: str) -> None:
    sock = authenticated(agent)
    reply = call(sock, request_doc)
    assert reply["ok"] is False and expected in reply["error"], reply
    assert "\n" not in reply["error"]
    assert call(sock, {"op": "ping"})["ok"] is True, "the connection stays usable"
    sock.close()
    assert no_worker_started(agent)


ESCAPES = ["../../secret", "/etc/passwd", "split/0/../../../secret", "split/0/..", "split/-1/x", "..\\..\\x",
           "split/0/a\x00b", "split/0", "split/0/x/y", "_input/0/../../secret", "split/00000000000/x", ""]


@pytest.mark.parametrize("key", ESCAPES)
def test_path_escape_keys_are_refused(agent: Agent, key: str) -> None:
    before = sorted(str(p) for p in agent.root.rglob("*"))
    sock = authenticated(agent)
    reply = call(sock, {"op": "get", "job": JOB, "key": key})
    assert reply["ok"] is False and ("object key" in reply["error"] or "no object" in reply["error"]), reply
    protocol.send_frame(sock, {"op": "put", "job": JOB, "key": key, "size": 4, "checksum": "0"})
    sock.sendall(b"evil")
    docs = [protocol.recv_frame(sock, "agent")]   # its refusal (MAC'd); then "evil" is no frame: closed
    assert drain(sock) == b""
    sock.close()
    assert docs and docs[0]["ok"] is False
    assert sorted(str(p) for p in agent.root.rglob("*")) == before, "no file may appear anywhere"


def test_symlink_escape_is_refused(agent: Agent) -> None:
    """An object path whose directory is a symlink out of the store resolves outside: refused."""
    outside = agent.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "loot").write_bytes(b"outside the store")
    job_dir = agent.data_dir / "objects" / JOB
    (job_dir / "evil").symlink_to(outside, target_is_directory=True)
    (job_dir / "split" / "0" / "link").symlink_to(outside / "loot")
    try:
        sock = authenticated(agent)
        for key in ("evil/0/loot", "split/0/link"):
            reply = call(sock, {"op": "get", "job": JOB, "key": key})
            assert reply["ok"] is False, reply
        sock.close()
    finally:
        (job_dir / "evil").unlink()
        (job_dir / "split" / "0" / "link").unlink()


def test_oversized_frame_after_auth_closes_the_connection(agent: Agent) -> None:
    sock = authenticated(agent)
    sock.sendall(struct.pack("!I", protocol.MAX_FRAME + 1) + b"x" * 1024)
    assert drain(sock) == b""
    sock.close()


def test_put_with_a_wrong_checksum_leaves_nothing(agent: Agent) -> None:
    sock = authenticated(agent)
    protocol.send_frame(sock, {"op": "put", "job": JOB, "key": "split/0/forged", "size": 4, "checksum": "00"})
    sock.sendall(b"evil")
    reply = protocol.recv_frame(sock, "agent")
    sock.close()
    assert reply["ok"] is False and "checksum mismatch" in reply["error"]
    store = agent.data_dir / "objects" / JOB / "split" / "0"
    assert sorted(p.name for p in store.iterdir()) == ["private"], "no forged object, no .part left"


def test_put_cut_short_leaves_nothing(agent: Agent) -> None:
    sock = authenticated(agent)
    protocol.send_frame(sock, {"op": "put", "job": JOB, "key": "split/0/short", "size": 1000, "checksum": "00"})
    sock.sendall(b"abc")
    sock.close()
    store = agent.data_dir / "objects" / JOB / "split" / "0"
    wait_until(lambda: sorted(p.name for p in store.iterdir()) == ["private"], "the partial put to be removed")


def test_legitimate_client_reads_the_object(agent: Agent) -> None:
    """The control: with the secret, the same object is readable (so refusals above mean something)."""
    client = agent.client()
    target = agent.root / "read-back"
    client.get_to_file(JOB, "split/0/private", target)
    client.close()
    assert target.read_bytes() == SECRET_BYTES
    target.unlink()


def test_run_error_from_a_client_without_secret_never_reaches_a_worker(agent: Agent) -> None:
    client = agent.client(secret=os.urandom(32))
    with pytest.raises(AuthenticationError):
        client.run({k: v for k, v in RUN.items() if k != "op"})
    client.close()
    assert no_worker_started(agent)


def test_agent_listens_on_the_cluster_interface_only(agent: Agent) -> None:
    """/proc/net/tcp: the listening socket of the agent's port is bound to 127.0.0.1, nothing else."""
    port_hex = f"{agent.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(":" + port_hex):
                listening.append(local)
    assert listening == ["0100007F:" + port_hex], listening


# ----------------------------------------------------------------------------- start-up refusals
@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_agent_refuses_a_wildcard_bind(tmp_path: Path, bind: str, agent: Agent) -> None:
    secret_file = tmp_path / "secret"
    make_secret(secret_file)
    result = subprocess.run(
        [sys.executable, "-m", "sonic.runtime.agent", "--name", "x", "--bind", bind, "--data-dir", str(tmp_path / "d"),
         "--secret-file", str(secret_file)], capture_output=True, text=True, env=agent_env(), timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "every interface" in result.stderr
    assert "Traceback" not in result.stderr


def test_agent_refuses_a_readable_secret(tmp_path: Path, agent: Agent) -> None:
    secret_file = tmp_path / "secret"
    make_secret(secret_file)
    secret_file.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "sonic.runtime.agent", "--name", "x", "--bind", "127.0.0.1", "--data-dir",
         str(tmp_path / "d"), "--secret-file", str(secret_file)], capture_output=True, text=True, env=agent_env(),
        timeout=60)
    assert result.returncode != 0
    assert "readable by others" in result.stderr and "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_file_is_private(agent: Agent) -> None:
    assert (agent.root / "secret").stat().st_mode & 0o777 == 0o600


def test_remote_call_error_names_the_problem(agent: Agent) -> None:
    client = agent.client()
    with pytest.raises(RemoteCallError) as info:
        client.call("get_everything")
    client.close()
    assert "unknown op 'get_everything'" in str(info.value)


# ----------------------------------------------------------------------------- per-frame integrity
def _flip_job_byte(sealed: bytes) -> bytes:
    """Alter one byte of the job id inside a sealed frame (still valid msgpack, still a request)."""
    at = sealed.index(JOB.encode()) + 2
    return sealed[:at] + bytes([sealed[at] ^ 0x01]) + sealed[at + 1:]


def test_tampered_frame_after_auth_is_rejected(agent: Agent) -> None:
    before = sorted(str(p) for p in agent.root.rglob("*"))
    sock = authenticated(agent)
    tampered = _flip_job_byte(protocol.sealed_frame(sock, {"op": "drop", "job": JOB}))
    sock.sendall(tampered)
    assert drain(sock) == b"", "the agent closes a connection whose frame fails its MAC"
    sock.close()
    assert sorted(str(p) for p in agent.root.rglob("*")) == before, "the altered request was not carried out"


def test_replayed_or_reordered_frame_after_auth_is_rejected(agent: Agent) -> None:
    sock = authenticated(agent)
    ping = protocol.sealed_frame(sock, {"op": "ping"})
    sock.sendall(ping)
    assert protocol.recv_frame(sock, "agent")["ok"] is True
    sock.sendall(ping)                      # the same bytes again: its sequence number is used up
    assert drain(sock) == b""
    sock.close()


def test_unsealed_frame_after_auth_is_rejected(agent: Agent) -> None:
    sock = authenticated(agent)
    sock.sendall(frame({"op": "ping"}))     # no MAC at all: what an injecting peer without the keys sends
    assert drain(sock) == b""
    sock.close()


def test_client_rejects_a_tampered_reply() -> None:
    import threading

    secret = os.urandom(32)
    server, client = socket.socketpair()
    try:
        def serve() -> None:
            protocol.server_handshake(server, secret, "fake", "client")
            protocol.recv_frame(server, "client")
            server.sendall(_flip_job_byte(protocol.sealed_frame(server, {"ok": True, "job": JOB})))

        thread = threading.Thread(target=serve)
        thread.start()
        protocol.client_handshake(client, secret, "fake")
        protocol.send_frame(client, {"op": "ping"})
        with pytest.raises(AuthenticationError, match="integrity check"):
            protocol.recv_frame(client, "fake")
        thread.join(10)
    finally:
        server.close()
        client.close()


def test_job_data_is_readable_by_the_agents_user_only(agent: Agent) -> None:
    objects = agent.data_dir / "objects"
    entries = [objects, *objects.rglob("*")]
    assert any(p.is_file() for p in entries)
    for path in entries:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"
