"""A throwaway OpenSSH server for local clusters (``--mode ssh`` and ``--mode netns``).

So that local clusters exercise exactly the SSH bootstrap used for real VMs, the harness runs
the system's real ``sshd`` with a configuration of its own: a generated ed25519 host key,
key-only authentication with a generated client key, our own authorized_keys file, PID file
and log in our directory, listening only on the address we give (loopback or a namespace
address). A known_hosts file with the host key is written for the client side, so host-key
verification works without trust-on-first-use.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sonic.emulation.procs import backoff, spawn, tail
from sonic.errors import SSHDError, TransportError

SSHD_BINARY = "/usr/sbin/sshd"          # sshd must be started by absolute path (it re-execs itself)
# sshd starts in tens of milliseconds; 10 s covers a loaded machine and a slow first key load.
SSHD_READY_TIMEOUT_S = 10.0
# ssh-keygen of an ed25519 key is instant; the bound only protects against a hung binary.
KEYGEN_TIMEOUT_S = 20.0
# Binding a random free port and handing it to sshd can race with another process taking it;
# a few attempts make that vanishingly unlikely.
PORT_ATTEMPTS = 5
# Enough concurrent unauthenticated connections for the bounded bootstrap pool plus retries.
MAX_STARTUPS = "64:30:128"


@dataclass
class ClientKeys:
    """The client side: private key and the known_hosts file our servers' keys go into."""

    key: Path
    known_hosts: Path


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    pid: int
    config: Path
    directory: Path
    host_public_key: str          # "ssh-ed25519 AAAA..."
    process: subprocess.Popen[bytes] | None = None


def require_sshd() -> str:
    path = SSHD_BINARY if os.path.exists(SSHD_BINARY) else shutil.which("sshd")
    if not path:
        raise SSHDError("no OpenSSH server found at /usr/sbin/sshd; install it: apt-get install -y openssh-server")
    return path


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` (no passphrase); return the public key line."""
    tool = shutil.which("ssh-keygen")
    if not tool:
        raise SSHDError("ssh-keygen not found; install it: apt-get install -y openssh-client")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    result = subprocess.run(
        [tool, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True, text=True, timeout=KEYGEN_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise SSHDError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")
    os.chmod(path, 0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def make_client_keys(directory: Path) -> ClientKeys:
    """One client key per cluster; known_hosts starts empty and collects server keys."""
    keys = ClientKeys(directory / "id_ed25519", directory / "known_hosts")
    keygen(keys.key, "sonic-local-cluster")
    keys.known_hosts.touch(mode=0o600)
    return keys


def known_hosts_name(host: str, port: int) -> str:
    """Host pattern as OpenSSH and paramiko look it up: bare for port 22, else [host]:port."""
    return host if port == 22 else f"[{host}]:{port}"


def add_known_host(known_hosts: Path, host: str, port: int, public_key: str) -> None:
    keytype, keydata = public_key.split()[:2]
    with open(known_hosts, "a") as fh:
        fh.write(f"{known_hosts_name(host, port)} {keytype} {keydata}\n")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, host: str, port: int, user: str, authorized_keys: Path, host_key: Path) -> Path:
    config = directory / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {port}",
            f"ListenAddress {host}",
            f"HostKey {host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {user}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            # Our files live in the project tree, whose permissions sshd's owner checks reject.
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            f"MaxStartups {MAX_STARTUPS}",
            "MaxSessions 64",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            "",
        ])
    )
    return config


def _banner(host: str, port: int, timeout_s: float) -> bool:
    """True once the server greets with an SSH banner (listening and accepting)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(
    directory: Path,
    client: ClientKeys,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    netns: str | None = None,
    user: str | None = None,
    timeout_s: float = SSHD_READY_TIMEOUT_S,
) -> SSHServer:
    """Start sshd listening on ``host:port`` (a free high port if None), inside ``netns`` if
    given, authorising ``client``'s key; add its host key to ``client.known_hosts``.

    For a namespace address the caller must have checked the route (DESIGN.md section 7)
    before calling: we connect to it to see the banner.
    """
    binary = require_sshd()
    user = user or getpass.getuser()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Privilege separation directory, required when sshd runs as root.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = directory / "ssh_host_ed25519_key"
    host_public = keygen(host_key, f"sonic-sshd-{directory.name}")
    authorized = directory / "authorized_keys"
    authorized.write_text(client.key.with_name(client.key.name + ".pub").read_text())
    os.chmod(authorized, 0o600)
    log = directory / "sshd.log"
    attempts = 1 if port is not None else PORT_ATTEMPTS
    last = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        config = write_config(directory, host, chosen, user, authorized, host_key)
        argv = [binary, "-D", "-e", "-f", str(config)]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        process = spawn(argv, log=log)
        deadline = time.monotonic() + timeout_s
        for remaining in backoff(deadline):
            if process.poll() is not None:
                break
            if _banner(host, chosen, min(1.0, remaining)):
                add_known_host(client.known_hosts, host, chosen, host_public)
                return SSHServer(host, chosen, user, process.pid, config, directory, host_public, process)
        last = tail(log)
        if process.poll() is None:
            # Alive but never answered: give up on it rather than leave it behind.
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
            raise TransportError(f"sshd at {host}:{chosen} did not answer within {timeout_s:g}s; log {log}: {last}")
        if "Address already in use" not in last:
            break
    raise SSHDError(f"sshd for {host} failed to start; log {log}: {last}")
