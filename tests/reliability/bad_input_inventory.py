"""Count the bad-input cases of the test suite, by kind of input.

    python tests/reliability/bad_input_inventory.py [--list]

A case is one collected test (one parametrization) that feeds Sonic one malformed input and
checks the refusal. They live in tests/sonic (library level and CLI with the reference
executor, written with the runtime) and tests/reliability (the CLI against a real cluster,
raw messages against a real agent). Selection is by node id, so renaming a test means
updating the table below; the script fails if a rule matches nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RULES: list[tuple[str, str]] = [
    ("app definition", r"tests/sonic/test_app.py::TestValidationErrors::test_(?!broadcast_with_gather|accepted_signatures"
                       r"|errors_are_user_input)"),
    ("app definition", r"tests/sonic/test_app.py::TestContext::test_bad_output_names_are_refused"),
    ("app definition", r"tests/sonic/test_app.py::TestLoadApp::test_(cycle|unknown_after|bad_signature|bad_pattern"
                       r"|duplicate|missing_module|missing_attribute|not_an_app|syntax_error|unknown_name"
                       r"|callable_needing_arguments|empty_module_name|relative_module_name)"),
    ("app definition", r"tests/sonic/test_cli.py::TestRunLocalReference::test_(malformed_app|unknown_app)"),
    ("app definition", r"tests/reliability/test_bad_inputs.py::test_bad_input_gets_one_clear_line\[app-"),
    ("cluster file", r"tests/sonic/test_cluster_spec.py::TestMalformed::test_(?!errors_are_user_input)"),
    ("cluster file", r"tests/sonic/test_cluster_spec.py::TestLoad::test_(missing_file|invalid_yaml|empty_file"
                     r"|binary_file|directory)"),
    ("cluster file", r"tests/reliability/test_bad_inputs.py::test_bad_input_gets_one_clear_line\[cluster-"),
    ("plan file", r"tests/sonic/test_plan.py::TestMalformed::"),
    ("plan file", r"tests/sonic/test_plan.py::TestCheck::test_(wrong_app|stage_missing|extra_stage|missing_edge"
                  r"|extra_edge|unknown_vm)"),
    ("plan file", r"tests/sonic/test_plan.py::TestLoad::test_(not_json|missing_file|directory|binary_file)"),
    ("plan file", r"tests/reliability/test_bad_inputs.py::test_bad_input_gets_one_clear_line\[plan-"),
    ("CLI flag", r"tests/sonic/test_cli.py::TestRunLocalReference::test_(missing_input|usage_error"
                 r"|local_reference_with_strategy)"),
    ("CLI flag", r"tests/sonic/test_cli.py::TestWorkloadsGen::test_bad_size"),
    ("CLI flag", r"tests/sonic/test_cli.py::TestMain::test_(click_usage_error|unknown_verb)"),
    ("CLI flag", r"tests/sonic/test_sizes.py::test_(parse_size_errors|parse_size_list_empty|parse_size_list_bad_item)"),
    ("CLI flag", r"tests/reliability/test_bad_inputs.py::test_bad_input_gets_one_clear_line\[flag-"),
    ("bad app at run time", r"tests/reliability/test_bad_inputs.py::test_bad_input_gets_one_clear_line\[runtime-"),
    ("raw agent message", r"tests/reliability/test_agent_security.py::test_(garbage_before_auth|requests_without_the_secret"
                          r"|wrong_secret|replayed_handshake|silent_peer|truncated_frame|malformed_authenticated"
                          r"|path_escape_keys|symlink_escape|oversized_frame_after_auth|put_with_a_wrong_checksum"
                          r"|put_cut_short|run_error_from_a_client_without_secret|agent_refuses)"),
]


def collect() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "tests/sonic", "tests/reliability"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if "::" in line]


def main() -> int:
    ids = collect()
    by_kind: Counter[str] = Counter()
    by_dir: Counter[str] = Counter()
    chosen: list[tuple[str, str]] = []
    for kind, pattern in RULES:
        matched = [i for i in ids if re.match(pattern, i)]
        if not matched:
            print(f"rule matches no test (renamed?): {pattern}", file=sys.stderr)
            return 1
        for node in matched:
            chosen.append((kind, node))
    seen: set[str] = set()
    for kind, node in chosen:
        if node in seen:
            continue
        seen.add(node)
        by_kind[kind] += 1
        by_dir["tests/reliability (new)" if node.startswith("tests/reliability") else "tests/sonic (existing)"] += 1
    if "--list" in sys.argv:
        for kind, node in chosen:
            print(f"{kind:18s} {node}")
    for kind, n in by_kind.items():
        print(f"{kind:18s} {n:4d}")
    for where, n in sorted(by_dir.items()):
        print(f"{where:24s} {n:4d}")
    print(f"{'total':18s} {sum(by_kind.values()):4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
