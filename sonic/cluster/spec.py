"""The cluster file (YAML, DESIGN.md section 7): VMs, remote storage, prices, calibration.

Every key is validated on load; an unknown or mistyped key gets one line naming it and the
fix. Prices default to AWS list prices (us-east-1, 2024), calibration defaults to EC2-like
figures until ``sonic cluster calibrate`` measures the real cluster.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from sonic.documents import decode, dotted, unknown_keys
from sonic.errors import ClusterFileError

DEFAULT_CLUSTER_FILE = Path(".sonic/cluster.yaml")


@dataclass
class SSHSpec:
    user: str | None = None
    key: str | None = None
    port: int = 22
    accept_new_host_keys: bool = False   # explicit opt-in; default verifies against known_hosts
    known_hosts: str | None = None
    connect_timeout_s: float = 10.0


@dataclass
class VMSpec:
    name: str
    host: str
    cores: int = 2
    memory_mb: int = 4096
    price_per_hour: float = 0.096        # m5.large on-demand, us-east-1
    agent_port: int = 7370
    data_dir: str = "/tmp/sonic-agent"
    ssh: SSHSpec | None = None
    netns: str | None = None             # local netns clusters: the namespace of this VM
    python: str | None = None            # interpreter on the VM (None: this one's path; python3 for listed VMs)


@dataclass
class RemoteStorageSpec:
    kind: str = "s3"
    bucket: str = "sonic-scratch"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    multipart_threshold_mb: int = 16
    # Hand the driver's boto3 credentials to the agents when they start (in their environment,
    # never on disk); off by default: on EC2 an instance profile is the better source.
    forward_credentials: bool = False


@dataclass
class Prices:
    """AWS list prices (us-east-1): S3 Standard requests and in-region transfer."""

    s3_put_per_1000: float = 0.005
    s3_get_per_1000: float = 0.0004
    s3_gb_month: float = 0.023
    s3_transfer_per_gb: float = 0.0      # in-region transfer to EC2 is free


@dataclass
class Calibration:
    """Cost-model inputs. Bandwidths in bytes/s, times in seconds.

    Defaults resemble an m5.large next to S3 (up to 10 Gbit/s burst, ~1.2 Gbit/s baseline,
    ~90 MB/s per S3 connection, 20-30 ms first-byte latency); ``measured`` says whether
    ``sonic cluster calibrate`` replaced them.
    """

    vm_bandwidth_Bps: float = 150e6
    vm_latency_s: float = 0.0002
    disk_write_Bps: float = 400e6
    disk_read_Bps: float = 800e6
    s3_latency_s: float = 0.025
    s3_conn_Bps: float = 90e6
    s3_aggregate_Bps: float = 600e6
    invoke_overhead_s: float = 0.002
    cold_start_s: float = 0.5
    measured: bool = False
    #: Seconds per object an instance writes or reads in place beyond its bytes: creating or
    #: opening the file, checksumming and registering it with the agent.
    object_overhead_s: float = 0.0005
    #: Per VM: how much longer a stage computes there than where it was profiled (a fixed CPU
    #: workload's time on the VM's worker over its time on the calibrating machine; 2.0 for a
    #: half-core CPU quota). A VM not listed computes as profiled (1.0).
    compute_factor: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalClusterInfo:
    """What the local harness started, so `cluster down` can stop exactly that (by PID)."""

    mode: str = "loopback"
    root: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    bridge: str | None = None
    vm_mbps: float | None = None
    s3_mbps: float | None = None
    s3_latency_ms: float | None = None
    # Added by the harness (sonic.emulation.local); all optional so older files still load.
    cluster_id: str = ""                 # names its namespaces/links; marks its directory
    state: str = "up"                    # "starting" until `up` finished, then "up"
    subnet: str | None = None            # netns mode: the /24 its bridge owns
    links: list[str] = field(default_factory=list)   # netns mode: root-side veths
    cluster_file: str | None = None      # where this description was written
    vm_cpus: float | None = None         # netns mode: each VM's CPU limit in cores (cgroups)
    vm_memory_mb: int | None = None      # netns mode: each VM's memory limit (cgroups)
    cgroups: dict[str, list[str]] = field(default_factory=dict)   # VM name -> its cgroup directories


@dataclass
class ClusterSpec:
    vms: list[VMSpec]
    remote_storage: RemoteStorageSpec = field(default_factory=RemoteStorageSpec)
    prices: Prices = field(default_factory=Prices)
    calibration: Calibration = field(default_factory=Calibration)
    secret_file: str | None = None
    local: LocalClusterInfo | None = None

    def vm(self, name: str) -> VMSpec:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise ClusterFileError(f"cluster has no VM named {name!r}; it has {', '.join(v.name for v in self.vms)}")

    @property
    def vm_names(self) -> list[str]:
        return [vm.name for vm in self.vms]

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for vm in doc["vms"]:
            if vm["ssh"] is None:
                del vm["ssh"]
            if vm["netns"] is None:
                del vm["netns"]
            if vm["python"] is None:
                del vm["python"]
        if doc["local"] is None:
            del doc["local"]
        return doc

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)


# Plausible ranges of numeric keys: anything outside is a typo (10**30 cores, a negative
# price, 1e308 MB), refused with the range in the message. (low, high), both inclusive.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("VMSpec", "cores"): (-math.inf, 4096),              # below 1: "must be positive", checked later
    ("VMSpec", "memory_mb"): (-math.inf, 16 * 1024 * 1024),
    ("VMSpec", "price_per_hour"): (0, 10_000),
    ("SSHSpec", "connect_timeout_s"): (0.1, 3600),
    ("RemoteStorageSpec", "multipart_threshold_mb"): (5, 5 * 1024),
    ("Prices", "*"): (0, 1_000_000),
    ("Calibration", "*"): (0, 1e15),
    ("LocalClusterInfo", "vm_mbps"): (1, 1e7),
    ("LocalClusterInfo", "s3_mbps"): (1, 1e7),
    ("LocalClusterInfo", "s3_latency_ms"): (0, 60_000),
}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", re.ASCII)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", re.ASCII)
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]{1,253}$", re.ASCII)


def _check_range(cls: type, key: str, value: Any, where: str) -> None:
    bounds = RANGES.get((cls.__name__, key)) or RANGES.get((cls.__name__, "*"))
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = bounds
    if not low <= value <= high:
        shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
        allowed = f"at most {high:g}" if low == -math.inf else f"between {low:g} and {high:g}"
        raise ClusterFileError(f"{where} is {shown}; it must be {allowed}")


#: How a type error in the cluster file ends: the fix.
FIX = "fix it in the cluster file (`sonic cluster up --local 1` writes a valid one to compare with)"
#: Sections that may be empty or null in the file and then take their defaults.
DEFAULTED_SECTIONS = ("remote_storage", "prices", "calibration", "local")


def _check_numbers(record: Any, where: str) -> None:
    """Finite floats and plausible ranges in ``record`` and the records inside it (msgspec has
    checked the types; NaN, inf and 10**30 cores are types it accepts)."""
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ClusterFileError(f"{where}.{f.name} must be a finite number, got {value!r}")
        _check_range(type(record), f.name, value, f"{where}.{f.name}")
        if is_dataclass(value):
            _check_numbers(value, f"{where}.{f.name}")


def parse_cluster(doc: Any, *, source: str = "cluster file", check_paths: bool = True) -> ClusterSpec:
    """Decode a parsed cluster document into a :class:`ClusterSpec` (types and required keys by
    msgspec, errors naming the key's path), then check what types cannot say."""
    if not isinstance(doc, dict):
        raise ClusterFileError(f"{source}: must be a YAML mapping with a 'vms' list")
    at, key, allowed = unknown_keys(doc, ClusterSpec)
    if key:
        shown = ", ".join(sorted(allowed)) if not at else ", ".join(allowed)
        raise ClusterFileError(f"{source}: {dotted(at) + ': ' if at else ''}unknown key {key!r}; allowed keys: {shown}")
    vms_doc = doc.get("vms")
    if not isinstance(vms_doc, list) or not vms_doc:
        raise ClusterFileError(f"{source}: 'vms' must be a non-empty list of VMs with name and host")
    # An empty or null section means its defaults (as `remote_storage: {}` always has).
    doc = {k: v for k, v in doc.items() if k not in DEFAULTED_SECTIONS or v}
    spec = decode(doc, ClusterSpec, source=source, error=ClusterFileError, fix=FIX)
    for i, vm in enumerate(spec.vms):
        where = f"{source}: vms[{i}]"
        _check_numbers(vm, where)
        if vm.ssh is not None:
            if not 0 < vm.ssh.port < 65536:
                raise ClusterFileError(f"{where}.ssh.port {vm.ssh.port} is not a TCP port (1-65535)")
            if check_paths and vm.ssh.key:
                key_path = Path(os.path.expanduser(vm.ssh.key))
                if not key_path.is_file():
                    raise ClusterFileError(f"{where}.ssh.key: no key file at {key_path}; fix the path or create the key")
        if not NAME_RE.match(vm.name):
            raise ClusterFileError(f"{where}: VM name {vm.name!r} must be 1-64 ASCII letters, digits, '_' or '-', "
                                   "starting with a letter or '_'")
        if not HOST_RE.match(vm.host):
            raise ClusterFileError(f"{where}: host {vm.host!r} is not a host name or IP address")
        if vm.cores < 1 or vm.memory_mb < 1:
            raise ClusterFileError(f"{where}: cores and memory_mb must be positive")
        if not 0 < vm.agent_port < 65536:
            raise ClusterFileError(f"{where}: agent_port {vm.agent_port} is not a TCP port (1-65535)")
    for section in ("remote_storage", "prices", "calibration", "local"):
        if getattr(spec, section) is not None:
            _check_numbers(getattr(spec, section), f"{source}: {section}")
    names = spec.vm_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ClusterFileError(f"{source}: VM name {dupes[0]!r} is used twice; VM names must be unique")
    endpoints: dict[tuple[str, int], str] = {}
    starting = spec.local is not None and spec.local.state == "starting"
    for vm in spec.vms if not starting else []:  # a harness file mid-start has no agent ports yet
        endpoint = (vm.host.lower(), vm.agent_port)
        if endpoint in endpoints:
            raise ClusterFileError(f"{source}: VMs {endpoints[endpoint]!r} and {vm.name!r} both have agent "
                                   f"{vm.host}:{vm.agent_port}; one agent cannot be two VMs, give each its own "
                                   "host or agent_port")
        endpoints[endpoint] = vm.name
    for name, factor in spec.calibration.compute_factor.items():
        where = f"{source}: calibration.compute_factor.{name}"
        if name not in names:
            raise ClusterFileError(f"{where}: no VM is named {name!r}; list factors of the file's VMs only")
        if not (math.isfinite(factor) and 0.01 <= factor <= 100):
            raise ClusterFileError(f"{where} is {factor!r}; it must be between 0.01 and 100 (re-run "
                                   "`sonic cluster calibrate`)")
    if spec.remote_storage.kind != "s3":
        raise ClusterFileError(f"{source}: remote_storage.kind {spec.remote_storage.kind!r} is not supported; use s3")
    _check_storage(spec.remote_storage, f"{source}: remote_storage")
    return spec


def _check_storage(rs: RemoteStorageSpec, where: str) -> None:
    if not BUCKET_RE.match(rs.bucket) or ".." in rs.bucket:
        raise ClusterFileError(f"{where}.bucket {rs.bucket!r} is not an S3 bucket name; use 3-63 lower-case letters, "
                               "digits, '.' or '-', e.g. sonic-scratch")
    if not rs.region or not NAME_RE.match(rs.region.replace("-", "_")):
        raise ClusterFileError(f"{where}.region {rs.region!r} is not a region name, e.g. us-east-1")
    if rs.endpoint_url is not None:
        try:
            url = urllib.parse.urlsplit(rs.endpoint_url)
            port = url.port
        except ValueError:
            url, port = None, None
        if url is None or url.scheme not in ("http", "https") or not url.hostname or (port is not None and port < 1):
            raise ClusterFileError(f"{where}.endpoint_url {rs.endpoint_url!r} is not a URL; write it as "
                                   "http(s)://HOST[:PORT], or drop it to use AWS S3")


def load_cluster(path: Path | str = DEFAULT_CLUSTER_FILE) -> ClusterSpec:
    path = Path(path)
    if not path.exists():
        raise ClusterFileError(
            f"no cluster file at {path}; start a local one with `sonic cluster up --local 3` or pass --cluster PATH"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterFileError(f"cannot read cluster file {path}: {exc.strerror}; pass a YAML file with --cluster") from None
    except UnicodeDecodeError:
        raise ClusterFileError(f"cluster file {path} is not text; it must be YAML") from None
    except RecursionError:
        raise ClusterFileError(f"cluster file {path} is nested too deeply to be a cluster file; fix the YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ClusterFileError(f"cluster file {path} is not valid YAML{line}; fix the syntax") from None
    return parse_cluster(doc, source=str(path))
