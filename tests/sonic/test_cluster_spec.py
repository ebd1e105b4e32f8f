"""The cluster file (sonic.cluster.spec): parse, save, load and every malformed variant."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sonic.cluster.spec import (
    DEFAULT_CLUSTER_FILE,
    Calibration,
    ClusterSpec,
    LocalClusterInfo,
    Prices,
    RemoteStorageSpec,
    SSHSpec,
    VMSpec,
    load_cluster,
    parse_cluster,
)
from sonic.errors import ClusterFileError, UserInputError


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    return key


@pytest.fixture
def doc(key_file: Path) -> dict:
    return {
        "vms": [
            {"name": "vm0", "host": "10.213.0.10", "cores": 2, "memory_mb": 8192, "price_per_hour": 0.096,
             "ssh": {"user": "sonic", "key": str(key_file), "port": 2222, "accept_new_host_keys": True}},
            {"name": "vm1", "host": "10.213.0.11", "cores": 4, "agent_port": 7371, "netns": "sonic-t-vm1"},
        ],
        "remote_storage": {"kind": "s3", "bucket": "sonic-scratch", "endpoint_url": "http://127.0.0.1:9000",
                           "region": "us-east-1"},
        "prices": {"s3_put_per_1000": 0.005},
        "calibration": {"vm_bandwidth_Bps": 1.25e8, "s3_latency_s": 0.02, "measured": True},
        "secret_file": "/tmp/secret",
        "local": {"mode": "loopback", "root": "/tmp/x", "pids": {"agent-vm0": 123}, "namespaces": []},
    }


def error(document, match: str, **kw) -> str:
    with pytest.raises(ClusterFileError) as exc:
        parse_cluster(document, source="c.yaml", **kw)
    message = str(exc.value)
    assert "\n" not in message
    assert match in message, message
    return message


class TestParse:
    def test_full_document(self, doc, key_file):
        spec = parse_cluster(doc)
        assert spec.vm_names == ["vm0", "vm1"]
        vm0 = spec.vm("vm0")
        assert vm0 == VMSpec("vm0", "10.213.0.10", 2, 8192, 0.096, ssh=SSHSpec(
            user="sonic", key=str(key_file), port=2222, accept_new_host_keys=True))
        vm1 = spec.vm("vm1")
        assert (vm1.cores, vm1.memory_mb, vm1.agent_port, vm1.ssh, vm1.netns) == (4, 4096, 7371, None, "sonic-t-vm1")
        assert spec.remote_storage.endpoint_url == "http://127.0.0.1:9000"
        assert spec.prices == Prices()
        assert spec.calibration.vm_bandwidth_Bps == 1.25e8 and spec.calibration.measured
        assert spec.calibration.disk_read_Bps == Calibration().disk_read_Bps
        assert spec.secret_file == "/tmp/secret"
        assert spec.local == LocalClusterInfo(mode="loopback", root="/tmp/x", pids={"agent-vm0": 123})

    def test_minimal_document_uses_defaults(self):
        spec = parse_cluster({"vms": [{"name": "a", "host": "127.0.0.1"}]})
        assert spec.vms == [VMSpec("a", "127.0.0.1")]
        assert spec.remote_storage == RemoteStorageSpec()
        assert spec.calibration == Calibration() and not spec.calibration.measured
        assert spec.local is None and spec.secret_file is None

    def test_ints_are_accepted_for_floats(self):
        spec = parse_cluster({"vms": [{"name": "a", "host": "h", "price_per_hour": 1}]})
        assert spec.vms[0].price_per_hour == 1.0 and isinstance(spec.vms[0].price_per_hour, float)

    def test_ssh_defaults_verify_host_keys(self):
        spec = parse_cluster({"vms": [{"name": "a", "host": "h", "ssh": {"user": "u"}}]})
        assert spec.vms[0].ssh == SSHSpec(user="u")
        assert spec.vms[0].ssh.accept_new_host_keys is False

    def test_key_with_tilde_is_expanded(self, tmp_path, monkeypatch):
        monkeypatch.setenv("HOME", str(tmp_path))
        (tmp_path / ".ssh").mkdir()
        (tmp_path / ".ssh" / "id_test").write_text("k")
        spec = parse_cluster({"vms": [{"name": "a", "host": "h", "ssh": {"key": "~/.ssh/id_test"}}]})
        assert spec.vms[0].ssh.key == "~/.ssh/id_test"

    def test_check_paths_off(self):
        spec = parse_cluster({"vms": [{"name": "a", "host": "h", "ssh": {"key": "/no/such/key"}}]},
                             check_paths=False)
        assert spec.vms[0].ssh.key == "/no/such/key"

    def test_vm_lookup_unknown(self, doc):
        with pytest.raises(ClusterFileError, match="no VM named 'vm9'.*vm0, vm1"):
            parse_cluster(doc).vm("vm9")


class TestRoundTrip:
    def test_save_and_load(self, doc, tmp_path):
        spec = parse_cluster(doc)
        path = tmp_path / "nested" / "cluster.yaml"
        spec.save(path)
        assert not path.with_suffix(".yaml.tmp").exists()
        loaded = load_cluster(path)
        assert loaded == spec
        again = tmp_path / "again.yaml"
        loaded.save(again)
        assert again.read_text() == path.read_text()

    def test_to_dict_drops_empty_optionals(self):
        spec = ClusterSpec(vms=[VMSpec("a", "h")])
        d = spec.to_dict()
        assert "ssh" not in d["vms"][0] and "netns" not in d["vms"][0] and "local" not in d
        assert parse_cluster(yaml.safe_load(yaml.safe_dump(d))) == spec

    def test_default_path(self):
        assert DEFAULT_CLUSTER_FILE == Path(".sonic/cluster.yaml")


class TestMalformed:
    def test_not_a_mapping(self):
        error(["vms"], "must be a YAML mapping")

    def test_unknown_top_level_key(self, doc):
        doc["clusters"] = []
        message = error(doc, "unknown key 'clusters'")
        assert "allowed keys" in message and "vms" in message

    def test_unknown_vm_key(self, doc):
        doc["vms"][1]["cpus"] = 4
        message = error(doc, "vms[1]: unknown key 'cpus'")
        assert "cores" in message

    def test_unknown_ssh_key(self, doc):
        doc["vms"][0]["ssh"]["password"] = "hunter2"
        error(doc, "vms[0].ssh: unknown key 'password'")

    def test_unknown_calibration_key(self, doc):
        doc["calibration"]["bandwidth"] = 1
        error(doc, "calibration: unknown key 'bandwidth'")

    @pytest.mark.parametrize("vms", [None, [], {"name": "a"}, "vm0"])
    def test_vms_missing_or_empty(self, vms):
        error({"vms": vms} if vms is not None else {}, "'vms' must be a non-empty list")

    def test_vm_not_a_mapping(self):
        error({"vms": ["vm0"]}, "vms[0] must be a mapping")

    @pytest.mark.parametrize("missing", ["name", "host"])
    def test_missing_required(self, doc, missing):
        del doc["vms"][1][missing]
        error(doc, f"vms[1]: missing required key '{missing}'")

    @pytest.mark.parametrize("field,value,match", [
        ("cores", "two", "vms[0].cores must be an integer, got 'two'"),
        ("cores", 2.5, "vms[0].cores must be an integer"),
        ("cores", True, "vms[0].cores must be an integer"),
        ("memory_mb", "8GB", "vms[0].memory_mb must be an integer"),
        ("price_per_hour", "cheap", "vms[0].price_per_hour must be a number"),
        ("name", 7, "vms[0].name must be a string"),
        ("host", None, "vms[0].host must not be empty"),
        ("agent_port", "7370", "vms[0].agent_port must be an integer"),
    ])
    def test_wrong_vm_types(self, doc, field, value, match):
        doc["vms"][0][field] = value
        error(doc, match)

    @pytest.mark.parametrize("field,value,match", [
        ("accept_new_host_keys", "yes", "vms[0].ssh.accept_new_host_keys must be true or false, got 'yes'"),
        ("accept_new_host_keys", 1, "must be true or false"),
        ("port", "22", "vms[0].ssh.port must be an integer"),
        ("user", ["root"], "vms[0].ssh.user must be a string"),
        ("connect_timeout_s", "10s", "vms[0].ssh.connect_timeout_s must be a number"),
    ])
    def test_wrong_ssh_types(self, doc, field, value, match):
        doc["vms"][0]["ssh"][field] = value
        error(doc, match)

    def test_ssh_not_a_mapping(self, doc):
        doc["vms"][0]["ssh"] = "sonic@10.213.0.10"
        error(doc, "vms[0].ssh must be a mapping")

    def test_bad_key_path(self, doc, tmp_path):
        doc["vms"][0]["ssh"]["key"] = str(tmp_path / "missing_key")
        message = error(doc, "vms[0].ssh.key: no key file at")
        assert "missing_key" in message

    def test_key_path_is_a_directory(self, doc, tmp_path):
        doc["vms"][0]["ssh"]["key"] = str(tmp_path)
        error(doc, "no key file at")

    def test_duplicate_vm_names(self, doc):
        doc["vms"][1]["name"] = "vm0"
        error(doc, "VM name 'vm0' is used twice")

    @pytest.mark.parametrize("port", [0, -1, 65536, 100000])
    def test_bad_agent_port(self, doc, port):
        doc["vms"][1]["agent_port"] = port
        error(doc, f"vms[1]: agent_port {port} is not a TCP port")

    @pytest.mark.parametrize("field", ["cores", "memory_mb"])
    def test_non_positive_resources(self, doc, field):
        doc["vms"][0][field] = 0
        error(doc, "cores and memory_mb must be positive")

    def test_unsupported_remote_storage(self, doc):
        doc["remote_storage"]["kind"] = "gcs"
        error(doc, "remote_storage.kind 'gcs' is not supported")

    def test_remote_storage_not_a_mapping(self, doc):
        doc["remote_storage"] = "s3://bucket"
        error(doc, "remote_storage must be a mapping")

    def test_secret_file_type(self, doc):
        doc["secret_file"] = 5
        error(doc, "secret_file must be a string")

    def test_errors_are_user_input_errors(self):
        assert issubclass(ClusterFileError, UserInputError) and ClusterFileError.exit_code == 2

    @pytest.mark.parametrize("port", [0, 70000])
    def test_bad_ssh_port(self, doc, port):
        doc["vms"][0]["ssh"]["port"] = port
        error(doc, "port")


class TestLoad:
    def test_missing_file(self, tmp_path):
        with pytest.raises(ClusterFileError) as exc:
            load_cluster(tmp_path / "nope.yaml")
        message = str(exc.value)
        assert "no cluster file at" in message and "sonic cluster up --local" in message

    def test_invalid_yaml(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("vms:\n  - {name: vm0, host: [unclosed\n")
        with pytest.raises(ClusterFileError) as exc:
            load_cluster(path)
        message = str(exc.value)
        assert "not valid YAML" in message and "(line" in message and str(path) in message

    def test_empty_file(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("")
        with pytest.raises(ClusterFileError, match="must be a YAML mapping"):
            load_cluster(path)

    def test_errors_name_the_file(self, tmp_path, doc):
        doc = copy.deepcopy(doc)
        doc["vms"][0]["cores"] = "two"
        path = tmp_path / "named.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ClusterFileError, match=f"{path}: vms\\[0\\].cores"):
            load_cluster(path)

    def test_yaml_yes_is_a_boolean(self, tmp_path, key_file):
        path = tmp_path / "c.yaml"
        path.write_text(f"vms:\n  - name: a\n    host: h\n    ssh: {{key: {key_file}, accept_new_host_keys: yes}}\n")
        assert load_cluster(path).vms[0].ssh.accept_new_host_keys is True

    def test_binary_file(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
        with pytest.raises(ClusterFileError):
            load_cluster(path)

    def test_directory(self, tmp_path):
        with pytest.raises(ClusterFileError):
            load_cluster(tmp_path)
