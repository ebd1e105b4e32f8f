"""SSH bootstrap of agents (DESIGN.md section 9): the code path used for real VMs.

For every VM: open an SSH session with paramiko (honouring ``~/.ssh/config``, verifying the
host key against known_hosts), upload the project as a content-addressed source archive and
unpack it into ``DATA_DIR/code/<hash>``, write the cluster secret (mode 0600) over SFTP, start
the agent detached (``setsid nohup``) with ``PYTHONPATH`` pointing at the unpacked code and the
same interpreter path as here, then health-check it with a version handshake. ``stop_agent``
reverses it: kill by the PID in ``agent.json``, remove the secret and the data directory.

Sessions run in a small thread pool (bounded concurrency: an sshd throttles bursts of
unauthenticated connections with MaxStartups), and connection set-up is retried with
backoff on the transient failures that throttling produces (banner timeouts, EOF, resets).
Host-key problems and authentication failures are never retried: they will not heal.
"""

from __future__ import annotations

import getpass
import json
import os
import posixpath
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import tenacity

from sonic.cluster.codebundle import CodeBundle
from sonic.cluster.readiness import AGENT_INFO_FILE, AgentProgram, agent_args, wait_agent_ready
from sonic.cluster.spec import SSHSpec, VMSpec
from sonic.errors import BootstrapError, ClusterFileError, HostKeyError, SonicError, TransportError
from sonic.polling import backoff

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")

# Bounded concurrency: OpenSSH's default MaxStartups (10:30:100) starts dropping
# unauthenticated connections beyond 10; 4 parallel sessions stay well clear of it and
# already hide most of the per-VM latency.
DEFAULT_MAX_WORKERS = 4
# Upload + unpack of the ~100 KiB archive and a few commands take well under a second per VM,
# so the timeouts below only bound hangs; they are generous for WAN links to real VMs.
BANNER_TIMEOUT_S = 15.0       # paramiko's own default; a throttled sshd answers late
AUTH_TIMEOUT_S = 15.0
CHANNEL_TIMEOUT_S = 30.0      # opening a channel and each read on it (tar of the archive)
# Connection attempts and backoff: enough to ride out an sshd that is throttling or restarting.
CONNECT_ATTEMPTS = 4
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0
# SIGTERM grace for an agent on `down` before SIGKILL (it stops its worker pool first).
AGENT_STOP_TIMEOUT_S = 5.0

# Directories that must never be a VM's data_dir, because `down` deletes the data_dir.
_PROTECTED_DIRS = {"/", "/tmp", "/var", "/var/tmp", "/home", "/root", "/usr", "/etc", "/opt", "/srv", "/run", "/bin", "/lib"}


@dataclass(frozen=True)
class SSHTimeouts:
    connect_s: float | None = None        # None: the VM's ssh.connect_timeout_s
    banner_s: float = BANNER_TIMEOUT_S
    auth_s: float = AUTH_TIMEOUT_S
    channel_s: float = CHANNEL_TIMEOUT_S


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = CONNECT_ATTEMPTS
    first_s: float = RETRY_FIRST_S
    max_s: float = RETRY_MAX_S


@dataclass
class SSHTarget:
    """Where and how to connect, after merging the cluster file with ~/.ssh/config."""

    name: str                          # VM name, for messages
    alias: str                         # host as written in the cluster file
    hostname: str                      # what we actually connect to
    port: int
    user: str
    key_files: list[str]
    known_hosts: list[Path]            # first entry receives accepted new keys
    accept_new: bool
    connect_timeout_s: float
    proxy_command: str | None = None

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"


def resolve_target(vm: VMSpec, ssh_config_path: Path | None = DEFAULT_SSH_CONFIG) -> SSHTarget:
    """Merge the VM's ssh settings with ``~/.ssh/config`` (explicit cluster-file values win,
    as command-line options win over the config file for ssh itself)."""
    spec = vm.ssh or SSHSpec()
    conf: dict[str, Any] = {}
    if ssh_config_path is not None:
        path = Path(os.path.expanduser(str(ssh_config_path)))
        if path.is_file():
            try:
                conf = dict(paramiko.SSHConfig.from_path(str(path)).lookup(vm.host))
            except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
                raise ClusterFileError(f"ssh config {path} cannot be parsed ({exc}); fix it or move it aside") from None
    port = spec.port if spec.port != 22 else int(conf.get("port", 22))
    user = spec.user or conf.get("user") or getpass.getuser()
    keys = [os.path.expanduser(spec.key)] if spec.key else [os.path.expanduser(k) for k in conf.get("identityfile", [])]
    if spec.known_hosts:
        known = [Path(os.path.expanduser(spec.known_hosts))]
    elif conf.get("userknownhostsfile"):
        known = [Path(os.path.expanduser(p)) for p in str(conf["userknownhostsfile"]).split()]
    else:
        known = [Path(os.path.expanduser(str(DEFAULT_KNOWN_HOSTS)))]
    proxy = conf.get("proxycommand")
    return SSHTarget(
        name=vm.name,
        alias=vm.host,
        hostname=str(conf.get("hostname", vm.host)),
        port=port,
        user=user,
        key_files=keys,
        known_hosts=known,
        accept_new=spec.accept_new_host_keys,
        connect_timeout_s=spec.connect_timeout_s,
        proxy_command=None if not proxy or proxy.lower() == "none" else proxy,
    )


def _pattern(target: SSHTarget) -> str:
    return target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Default policy: an unknown host is refused, with the fix in the message."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        t = self.target
        file = t.known_hosts[0]
        port_opt = f"-p {t.port} " if t.port != 22 else ""
        raise HostKeyError(
            f"ssh host {t.where} (VM {t.name}) is not in known_hosts {file}; refusing to connect. Fix: add its key "
            f"(`ssh-keyscan {port_opt}{t.hostname} >> {file}` after checking the fingerprint) or set "
            "ssh.accept_new_host_keys: true for this VM in the cluster file"
        )


_known_hosts_lock = threading.Lock()


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Opt-in (ssh.accept_new_host_keys): trust a host seen for the first time and remember
    its key, like OpenSSH's StrictHostKeyChecking=accept-new. A changed key is still refused."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        file = self.target.known_hosts[0]
        with _known_hosts_lock:
            file.parent.mkdir(parents=True, exist_ok=True)
            with open(file, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _mismatch(target: SSHTarget) -> HostKeyError:
    file = target.known_hosts[0]
    return HostKeyError(
        f"ssh host key of {target.where} (VM {target.name}) does not match known_hosts {file}; refusing to connect "
        "(possible man-in-the-middle). If the server was re-created on purpose, remove the old key with "
        f"`ssh-keygen -R '{_pattern(target)}' -f {file}` and try again"
    )


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (HostKeyError, paramiko.BadHostKeyException, paramiko.AuthenticationException)):
        return False
    return isinstance(exc, (paramiko.SSHException, EOFError, OSError))


class Session:
    """One authenticated SSH connection to a VM, with SFTP and command helpers."""

    def __init__(self, client: paramiko.SSHClient, target: SSHTarget, timeouts: SSHTimeouts) -> None:
        self.client = client
        self.target = target
        self.timeouts = timeouts
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            channel = self._sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeouts.channel_s)
        return self._sftp

    def run(self, command: str, timeout_s: float | None = None) -> tuple[int, str, str]:
        """Run a shell command; returns (exit status, stdout, stderr)."""
        timeout = timeout_s if timeout_s is not None else self.timeouts.channel_s
        try:
            _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            return stdout.channel.recv_exit_status(), out, err
        except TimeoutError:
            raise TransportError(
                f"command on VM {self.target.name} ({self.target.where}) timed out after {timeout:g}s: {command[:80]}"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"ssh session to VM {self.target.name} ({self.target.where}) broke: {exc}") from None

    def check(self, command: str, timeout_s: float | None = None) -> str:
        status, out, err = self.run(command, timeout_s)
        if status != 0:
            raise TransportError(
                f"command failed on VM {self.target.name} ({self.target.where}) with status {status}: "
                f"{command[:80]}: {(err or out).strip()[-300:]}"
            )
        return out

    def read_text(self, path: str) -> str | None:
        try:
            with self.sftp.open(path, "r") as fh:
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:  # paramiko maps SFTP status codes to IOError/OSError
            if getattr(exc, "errno", None) == 2:
                return None
            raise TransportError(f"reading {path} on VM {self.target.name} ({self.target.where}) failed: {exc}") from None

    def write_private(self, path: str, data: bytes) -> None:
        """Write a file readable only by its owner: chmod before any byte is written, then
        rename into place so readers never see a partial secret."""
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with self.sftp.open(tmp, "w") as fh:
                fh.chmod(0o600)
                fh.write(data)
            self.sftp.posix_rename(tmp, path)
        except OSError as exc:
            raise TransportError(f"writing {path} on VM {self.target.name} ({self.target.where}) failed: {exc}") from None

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                return False
            raise TransportError(f"stat {path} on VM {self.target.name} ({self.target.where}) failed: {exc}") from None


def _connect_once(target: SSHTarget, timeouts: SSHTimeouts) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # Only the chosen known_hosts files are trusted (not implicitly ~/.ssh/known_hosts too),
    # so a cluster-specific file fully decides.
    for file in target.known_hosts:
        if file.is_file():
            client.get_host_keys().load(str(file))
    client.set_missing_host_key_policy(_AcceptNew(target) if target.accept_new else _RejectUnknown(target))
    connect_timeout = timeouts.connect_s if timeouts.connect_s is not None else target.connect_timeout_s
    sock = paramiko.ProxyCommand(target.proxy_command) if target.proxy_command else None
    explicit_keys = bool(target.key_files)
    try:
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            key_filename=target.key_files or None,  # type: ignore[arg-type]  # paramiko takes a list too
            # With an explicit key we use exactly that key (like IdentitiesOnly); without one
            # we behave like ssh: agent and the default key files.
            allow_agent=not explicit_keys,
            look_for_keys=not explicit_keys,
            timeout=connect_timeout,
            banner_timeout=timeouts.banner_s,
            auth_timeout=timeouts.auth_s,
            channel_timeout=timeouts.channel_s,
            sock=sock,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise _mismatch(target) from None
    except BaseException:
        client.close()
        raise
    return client


def open_session(
    target: SSHTarget, timeouts: SSHTimeouts = SSHTimeouts(), retry: RetryPolicy = RetryPolicy()
) -> Session:
    """Connect with retries on transient failures; host-key and auth problems fail at once.

    The retry loop is tenacity's: ``retry.attempts`` tries, waits doubling from
    ``retry.first_s`` up to ``retry.max_s``, only for :func:`_is_transient` failures."""

    def connect() -> Session:
        try:
            return Session(_connect_once(target, timeouts), target, timeouts)
        except paramiko.AuthenticationException as exc:  # never transient: a wrong user or key
            raise TransportError(
                f"ssh authentication as {target.user} to {target.where} (VM {target.name}) failed ({exc}); "
                "check ssh.user and ssh.key in the cluster file"
            ) from None

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, retry.attempts)),
        wait=tenacity.wait_exponential(multiplier=retry.first_s, max=retry.max_s),
        retry=tenacity.retry_if_exception(_is_transient),
        reraise=True,
    )
    try:
        return retrying(connect)
    except Exception as exc:
        if not _is_transient(exc):
            raise
        raise TransportError(
            f"cannot reach sshd of VM {target.name} at {target.where} after {max(1, retry.attempts)} attempts: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def check_data_dir(vm: VMSpec, data_dir: str) -> str:
    """The data dir is deleted on `down`: it must be a dedicated absolute directory."""
    norm = posixpath.normpath(data_dir)
    if not posixpath.isabs(norm) or norm in _PROTECTED_DIRS or norm.count("/") < 2:
        raise ClusterFileError(
            f"VM {vm.name}: data_dir {data_dir!r} must be a dedicated absolute directory such as /tmp/sonic-agent "
            "(it is deleted by `sonic cluster down`)"
        )
    return norm


def _remote_data_dir(session: Session, vm: VMSpec) -> str:
    data_dir = vm.data_dir
    if data_dir.startswith("~"):
        data_dir = session.sftp.normalize(".") + data_dir[1:]
    return check_data_dir(vm, data_dir)


@dataclass
class AgentLaunch:
    """What to run on each VM (the same for all VMs of a cluster)."""

    program: AgentProgram
    secret: bytes
    bundle: CodeBundle
    bind: str | None = None            # None: the VM's host (its address as we know it)
    port: int | None = None            # None: the VM's agent_port; 0: the agent picks
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float | None = None
    check_python: bool = False         # probe the VM's Python and the agent's packages first


def _prepare(session: Session, data_dir: str, bundle: CodeBundle) -> tuple[str, bool]:
    """Create the data dir (private) and say whether this code version is already unpacked.
    One command: every exec costs a remote login shell, which is slow on some images."""
    code_dir = posixpath.join(data_dir, "code", bundle.digest)
    q = shlex.quote
    out = session.check(
        f"mkdir -p {q(posixpath.join(data_dir, 'code'))} && chmod 700 {q(data_dir)} && "
        f"if test -f {q(posixpath.join(code_dir, '.complete'))}; then echo cached; else echo missing; fi"
    )
    return code_dir, out.strip().endswith("cached")


def _upload_code(session: Session, code_dir: str, bundle: CodeBundle) -> None:
    archive = f"{code_dir}.tar.gz"
    part = f"{archive}.part{os.getpid()}"
    try:
        session.sftp.put(str(bundle.path), part)
        session.sftp.posix_rename(part, archive)
    except OSError as exc:
        raise TransportError(
            f"uploading code to VM {session.target.name} ({session.target.where}) failed: {exc}"
        ) from None
    tmp, q = f"{code_dir}.tmp", shlex.quote
    # Unpack beside the final name and rename: a half-unpacked tree is never used.
    session.check(
        f"rm -rf {q(tmp)} && mkdir -p {q(tmp)} && tar -xzf {q(archive)} -C {q(tmp)} && touch {q(tmp)}/.complete "
        f"&& rm -rf {q(code_dir)} && mv {q(tmp)} {q(code_dir)} && rm -f {q(archive)}"
    )


#: Modules the agent and its workers import (import name -> pip name), checked before start.
AGENT_REQUIREMENTS: Mapping[str, str] = {
    "boto3": "boto3", "msgpack": "msgpack", "networkx": "networkx", "xxhash": "xxhash", "yaml": "PyYAML",
    "packaging": "packaging", "msgspec": "msgspec", "threadpoolctl": "threadpoolctl",
}
MIN_PYTHON = (3, 11)
_PROBE = (
    "import importlib.util, json, sys; "
    "print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, "
    "'missing': [m for m in %r if importlib.util.find_spec(m) is None]}))"
)


def check_remote_python(session: Session, python: str) -> dict[str, Any]:
    """Is ``python`` on the VM new enough and does it have what the agent imports? One line
    naming what is missing and how to fix it otherwise."""
    t = session.target
    where = f"VM {t.name} ({t.where})"
    status, out, err = session.run(f"{shlex.quote(python)} -c {shlex.quote(_PROBE % (sorted(AGENT_REQUIREMENTS),))}")
    if status == 127 or (status != 0 and "not found" in err):
        raise TransportError(
            f"{where} has no Python at {python!r}; install Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} there "
            "or set python: /path/to/python3 for this VM in the cluster file"
        )
    try:
        facts = dict(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise TransportError(f"{where}: {python} -c ... failed (status {status}): {(err or out).strip()[-200:]}") from None
    version = tuple(int(v) for v in facts["version"])
    if version[:2] < MIN_PYTHON:
        raise TransportError(
            f"{where}: {python} is Python {'.'.join(map(str, version))}, Sonic needs >= "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}; install a newer Python there and set python: to it in the cluster file"
        )
    missing = [AGENT_REQUIREMENTS[m] for m in facts.get("missing", [])]
    if missing:
        raise TransportError(
            f"{where}: {python} lacks {', '.join(missing)}, which the Sonic agent needs; install them there: "
            f"{python} -m pip install {' '.join(missing)}"
        )
    return facts


def _remote_alive(session: Session, pid: int) -> bool:
    """Read /proc/PID/stat over SFTP (cheap, unlike an exec): running and not a zombie."""
    stat = session.read_text(f"/proc/{pid}/stat")
    if not stat:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def _remote_is_ours(session: Session, pid: int, data_dir: str) -> bool:
    """Alive and its command line names ``data_dir`` (guards against PID reuse)."""
    if not _remote_alive(session, pid):
        return False
    cmdline = (session.read_text(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
    return data_dir in cmdline


def _remote_diagnostics(session: Session, data_dir: str) -> str:
    lines: list[str] = []
    for name in ("agent.stdout", "agent.log"):
        text = session.read_text(posixpath.join(data_dir, name)) or ""
        lines += [line for line in text[-1500:].splitlines()[-8:] if line.strip()]
    return f"agent output in {data_dir}: {' | '.join(lines)}" if lines else f"no agent output in {data_dir}"


def _read_info(session: Session, data_dir: str) -> dict[str, Any] | None:
    text = session.read_text(posixpath.join(data_dir, AGENT_INFO_FILE))
    if not text:
        return None
    try:
        return dict(json.loads(text))
    except ValueError:
        return None  # written atomically by the agent, so this is only a foreign half-file


def deploy_agent(
    vm: VMSpec,
    launch: AgentLaunch,
    *,
    ssh_config_path: Path | None = DEFAULT_SSH_CONFIG,
    timeouts: SSHTimeouts = SSHTimeouts(),
    retry: RetryPolicy = RetryPolicy(),
    on_launched: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Bootstrap one VM's agent and wait until it answers; returns its agent.json + ping."""
    target = resolve_target(vm, ssh_config_path)
    with open_session(target, timeouts, retry) as session:
        data_dir = _remote_data_dir(session, vm)
        _stop_remote_agent(session, data_dir)  # a leftover agent would hold the port
        prefix = launch.program.argv_prefix
        if vm.python:  # the VM's own interpreter (a real VM rarely has this machine's path)
            prefix = (vm.python, *prefix[1:])
        if launch.check_python:
            check_remote_python(session, prefix[0])
        code_dir, cached = _prepare(session, data_dir, launch.bundle)
        if not cached:
            _upload_code(session, code_dir, launch.bundle)
        secret_file = posixpath.join(data_dir, "secret")
        session.write_private(secret_file, launch.secret.hex().encode() + b"\n")
        argv = [*prefix, *agent_args(
            vm.name,
            launch.bind or target.hostname,
            vm.agent_port if launch.port is None else launch.port,
            data_dir, secret_file, vm.cores, vm.memory_mb,
            launch.s3_endpoint, launch.s3_bucket, launch.s3_region,
        )]
        env = {"PYTHONPATH": code_dir, **launch.env}
        q = shlex.quote
        env_words = " ".join(q(f"{k}={v}") for k, v in env.items())
        # Only the agent itself goes to the background (braces), with every stream
        # redirected, so the SSH channel closes at once; $! is then the agent's own PID
        # (env, setsid and nohup exec in place).
        out = session.check(
            f"cd {q(data_dir)} && rm -f {AGENT_INFO_FILE} && {{ "
            f"env {env_words} setsid nohup {' '.join(q(a) for a in argv)} "
            f">> {q(posixpath.join(data_dir, 'agent.stdout'))} 2>&1 < /dev/null & echo $!; }}"
        )
        try:
            launcher_pid = int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TransportError(f"starting the agent on VM {vm.name} ({target.where}) printed no PID: {out!r}") from None
        if on_launched is not None:
            on_launched(vm.name, launcher_pid)
        kwargs: dict[str, Any] = {}
        if launch.ready_timeout_s is not None:
            kwargs["timeout_s"] = launch.ready_timeout_s
        info = wait_agent_ready(
            vm.name,
            target.hostname,
            lambda: _read_info(session, data_dir),
            launch.secret,
            ping=launch.program.ping,
            alive=lambda: _remote_alive(session, launcher_pid),
            diagnostics=lambda: _remote_diagnostics(session, data_dir),
            **kwargs,
        )
        info.setdefault("pid", launcher_pid)
        info["data_dir"] = data_dir
        info["code_dir"] = code_dir
        return info


def _stop_remote_agent(session: Session, data_dir: str, timeout_s: float = AGENT_STOP_TIMEOUT_S) -> bool:
    """Kill the agent whose PID is in ``data_dir/agent.json`` (if it is still that agent)."""
    info = _read_info(session, data_dir)
    if not info or not isinstance(info.get("pid"), int):
        return False
    pid = int(info["pid"])
    if not _remote_is_ours(session, pid, data_dir):
        return False
    session.run(f"kill -TERM {pid}")
    for _ in backoff(time.monotonic() + timeout_s):
        if not _remote_is_ours(session, pid, data_dir):
            return True
    session.run(f"kill -KILL {pid}")
    return True


def stop_agent(
    vm: VMSpec,
    *,
    remove_data: bool = True,
    ssh_config_path: Path | None = DEFAULT_SSH_CONFIG,
    timeouts: SSHTimeouts = SSHTimeouts(),
    retry: RetryPolicy = RetryPolicy(),
) -> bool:
    """Stop the VM's agent (by the PID in agent.json), then delete its secret and data dir.
    Returns whether an agent was running."""
    target = resolve_target(vm, ssh_config_path)
    with open_session(target, timeouts, retry) as session:
        data_dir = _remote_data_dir(session, vm)
        stopped = _stop_remote_agent(session, data_dir)
        q = shlex.quote
        command = f"rm -f {q(posixpath.join(data_dir, 'secret'))}"
        if remove_data:
            command += f" && rm -rf {q(data_dir)}"
        session.check(command)
        return stopped


#: Called once per VM as soon as its job ends: (VM name, result, or the error it failed with).
DoneFn = Callable[[str, Any, SonicError | None], None]


def _run_all(
    vms: Sequence[VMSpec], job: Callable[[VMSpec], Any], max_workers: int, verb: str, on_done: DoneFn | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    failures: dict[str, SonicError] = {}

    def tracked(vm: VMSpec) -> Any:
        try:
            result = job(vm)
        except SonicError as exc:
            if on_done is not None:
                on_done(vm.name, None, exc)
            raise
        if on_done is not None:
            on_done(vm.name, result, None)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(vms))), thread_name_prefix="sonic-ssh") as pool:
        futures = {vm.name: pool.submit(tracked, vm) for vm in vms}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except SonicError as exc:
                failures[name] = exc
    if failures:
        first = next(iter(failures))
        raise BootstrapError(
            f"{verb} failed on {len(failures)} of {len(vms)} VMs ({', '.join(failures)}); {first}: {failures[first]}",
            failures,
            results,
        )
    return results


def deploy_all(
    vms: Sequence[VMSpec],
    launch: AgentLaunch,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    ssh_config_path: Path | None = DEFAULT_SSH_CONFIG,
    timeouts: SSHTimeouts = SSHTimeouts(),
    retry: RetryPolicy = RetryPolicy(),
    on_launched: Callable[[str, int], None] | None = None,
    on_done: DoneFn | None = None,
) -> dict[str, dict[str, Any]]:
    """Bootstrap every VM with at most ``max_workers`` SSH sessions at a time; ``on_done``
    reports each VM as it finishes (progress)."""
    return _run_all(
        vms,
        lambda vm: deploy_agent(
            vm, launch, ssh_config_path=ssh_config_path, timeouts=timeouts, retry=retry, on_launched=on_launched
        ),
        max_workers,
        "agent bootstrap",
        on_done,
    )


def stop_all(
    vms: Sequence[VMSpec],
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    ssh_config_path: Path | None = DEFAULT_SSH_CONFIG,
    timeouts: SSHTimeouts = SSHTimeouts(),
    retry: RetryPolicy = RetryPolicy(),
    on_done: DoneFn | None = None,
) -> dict[str, bool]:
    return _run_all(
        vms,
        lambda vm: stop_agent(vm, ssh_config_path=ssh_config_path, timeouts=timeouts, retry=retry),
        max_workers,
        "agent stop",
        on_done,
    )
