"""Reliability report: one table of what was tried against lmcache and what came out.

    python benchmarks/reliability_report.py [--json FILE] [--soak-seconds N] [--fuzz-seconds N]

Runs, in order:
1. the soak of tests/python/soak_driver.py (threads on one engine with host
   memory, disk and Redis tiers, Redis killed and restarted, disk and remote
   records damaged; every loaded byte checked);
2. the fuzzers, briefly, through scripts/fuzz.sh (FUZZ_SECONDS each);
3. the attack tests listed in ATTACKS below: a passing test is an attack refused.

Exits non-zero when a byte was lost or wrong, anything crashed, or an attack
test failed. With --json the same figures are written as flat keys.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

# One row per attack: its name, and how it is checked. A check is a pytest node
# id (relative to tests/; "file::test" covers every parameter, "file::test[p]"
# one) or "ctest:<program>" (a native test program; it holds several checks).
# A check whose test does not exist is not run; an attack none of whose checks
# ran is "not tried", never counted as refused.
SEC = "python/integrations/vllm/test_lookup_rpc_security.py::"
ATTACKS: list[tuple[str, list[str]]] = [
    ("lookup socket reached from another uid", [
        SEC + "test_another_uid_cannot_reach_the_socket_or_the_secret",
        SEC + "test_peer_credentials_refuse_another_uid_even_if_the_files_were_opened_up",
        SEC + "test_client_sends_nothing_to_a_server_of_another_uid"]),
    ("lookup request without the secret", [SEC + "test_without_the_secret_nothing_is_answered_and_nothing_cleared"]),
    ("lookup frame with a huge length field", [
        SEC + "test_huge_length_fields_allocate_nothing_and_close_the_connection"]),
    ("idle, slow and surplus lookup connections", [
        SEC + "test_idle_and_slow_peers_are_dropped_and_their_threads_end",
        SEC + "test_connections_past_the_cap_are_refused_and_threads_stay_bounded"]),
    ("disk directory others can write to", [
        "python/test_disk_tier.py::test_directory_others_can_write_to_is_refused_naming_it", "ctest:test_disk_security"]),
    ("symlink planted as a disk .tmp file", ["ctest:test_disk_security"]),
    ("foreign files in the disk directory", [
        "python/test_disk_tier.py::test_records_are_private_and_foreign_files_survive", "ctest:test_disk_security"]),
    ("forged disk record", [
        "python/test_record_key.py::test_disk_records_of_another_secret_are_refused", "ctest:test_record_auth"]),
    ("forged remote record (tenant rewrites a payload)", [
        "python/remote/test_remote_auth.py::test_tenant_rewriting_a_payload_is_refused",
        "python/remote/test_remote_auth.py::test_forged_values_are_refused[sealed_with_other_secret]",
        "python/remote/test_remote_auth.py::test_forged_values_are_refused[old_format_with_checksum]"]),
    ("remote value moved to another key", [
        "python/remote/test_remote_auth.py::test_forged_values_are_refused[moved_from_other_key]"]),
    ("zstd / lz4 decompression bombs", [
        "python/remote/test_remote_limits.py::test_compression_bombs_are_refused_with_bounded_memory"]),
    ("block id 2**62 (slot overflow)", [
        "python/test_engine_inputs.py::test_block_ids_outside_the_cache_are_refused",
        "python/test_engine_inputs.py::test_slots_from_blocks_checks_before_multiplying"]),
    ("strided buffers", [
        "python/test_engine_inputs.py::test_buffer_functions_refuse_strided_views",
        "python/test_engine_inputs.py::test_import_record_refuses_a_strided_buffer"]),
    ("engine used in a forked child", [
        "python/test_engine_inputs.py::test_engine_in_a_forked_child_refuses_instead_of_losing_writes",
        "ctest:test_record_auth"]),
    ("L1 corruption persisted to disk or remote", ["ctest:test_record_auth"]),
    ("unrelated LMCACHE_ environment variable", [
        "python/test_config.py::test_unrelated_environment_variable_warns_and_starts"]),
    ("password or secret in repr and logs", [
        "python/test_config.py::test_repr_shows_no_secret_or_password",
        "python/remote/test_remote_tier.py::test_password_never_in_logs_or_errors",
        "python/remote/test_remote_auth.py::test_the_record_key_is_never_shown"]),
]


# ---------------------------------------------------------------- the soak
def run_soak(seconds: float) -> dict:
    # soak_driver imports redis_servers from its own folder.
    sys.path.insert(0, str(TESTS / "python"))
    spec = importlib.util.spec_from_file_location("soak_driver", TESTS / "python" / "soak_driver.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    from redis_servers import free_port

    # The faults are injected on purpose: the warnings lmcache logs about them are expected.
    logging.getLogger("lmcache").setLevel(logging.ERROR)
    port = free_port() if shutil.which("redis-server") else None
    if port is None:
        print("redis-server not found: the soak runs without the remote tier", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="lmcache-soak-") as workdir:
        result = soak.run_soak(seconds, threads=4, workdir=workdir, redis_port=port, seed=20240)
    for detail in result.pop("crash_details"):
        print(detail, file=sys.stderr)
    return result


# ---------------------------------------------------------------- the fuzzers
def run_fuzzers(seconds: int) -> dict:
    """scripts/fuzz.sh prints a '== ...' header per target, then libFuzzer's
    final stats. Each run prints both 'Done N runs' and
    'stat::number_of_executed_units: N': the stat line counts, 'Done' only
    where it is missing."""
    env = dict(os.environ, FUZZ_SECONDS=str(seconds))
    try:
        out = subprocess.run(["bash", "scripts/fuzz.sh"], cwd=ROOT, env=env, capture_output=True,
                             timeout=8 * seconds + 1200)  # four targets, and a first native build
        output, rc = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as e:
        output, rc = e.stdout or b"", -1
    text = output.decode(errors="replace")
    result = {"inputs_fuzzed": 0, "fuzz_crashes": len(re.findall(r"^fuzz: \S+ found a crash", text, re.M))}
    sections = re.split(r"^== ", text, flags=re.M)[1:]
    for section in sections:
        name = re.sub(r"[^a-z0-9]+", "_", section.split("(")[0].split(":")[-1].strip().lower()).strip("_")
        units = [int(n) for n in re.findall(r"^stat::number_of_executed_units:\s*(\d+)", section, re.M)]
        if not units:
            units = [int(n) for n in re.findall(r"^Done (\d+) runs", section, re.M)]
        result[f"inputs_fuzzed_{name}"] = sum(units)
        result["inputs_fuzzed"] += sum(units)
    # A failure that is not a found crash (a build error, a missing tool) is shown, not counted as a crash.
    result["fuzz_ok"] = rc == 0
    for line in re.findall(r"^fuzz: .*$", text, re.M):
        print(line, file=sys.stderr)  # names the input that crashed, to reproduce it
    if rc != 0 and not result["fuzz_crashes"]:
        print(f"scripts/fuzz.sh failed (exit {rc}):\n{text[-3000:]}", file=sys.stderr)
    return result


# ---------------------------------------------------------------- the attacks
def _pytest_check_exists(check: str) -> bool:
    path, _, test = check.partition("::")
    file = TESTS / path
    name = test.split("[")[0]
    return file.is_file() and re.search(rf"^def {re.escape(name)}\(", file.read_text(), re.M) is not None


def _run_pytest(checks: list[str]) -> dict[str, str]:
    """Outcome ('passed', 'failed', 'skipped') of every test the checks select, by node id."""
    # Whole tests are selected (a parameter id that is not there would stop
    # pytest from running anything); the parameters are picked out afterwards.
    wanted = sorted({c.split("[")[0] for c in checks})
    if not wanted:
        return {}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *wanted],
                         cwd=TESTS, capture_output=True, text=True, timeout=1800)
    outcomes = {}
    for m in re.finditer(r"^(PASSED|FAILED|ERROR|XPASS|XFAIL) (\S+)", out.stdout, re.M):
        node = m.group(2).removeprefix("tests/")
        outcomes[node] = "passed" if m.group(1) == "PASSED" else "failed"
    if out.returncode not in (0, 1):  # 1: some test failed (recorded above); else pytest itself failed
        print(f"pytest exit {out.returncode}:\n{out.stdout[-3000:]}{out.stderr[-2000:]}", file=sys.stderr)
    for line in out.stdout.splitlines():
        if line.startswith("FAILED") or line.startswith("ERROR"):
            print(line, file=sys.stderr)
    return outcomes


def _run_ctest(programs: list[str], build: Path) -> dict[str, str]:
    if not programs or not (build / "CTestTestfile.cmake").is_file():
        return {}
    pattern = "^(" + "|".join(map(re.escape, programs)) + ")$"
    out = subprocess.run(["ctest", "--test-dir", str(build), "-R", pattern, "--output-on-failure"],
                         capture_output=True, text=True, timeout=1800)
    outcomes = {}
    for m in re.finditer(r"Test\s+#\d+: (\S+) \.+\s*(\*\*\*)?(\w+)", out.stdout):
        outcomes[m.group(1)] = "passed" if m.group(3) == "Passed" else (
            "skipped" if m.group(3) in ("Skipped", "Not") else "failed")
    return outcomes


def _check_outcome(check: str, pytest_out: dict[str, str], ctest_out: dict[str, str]) -> str:
    if check.startswith("ctest:"):
        return ctest_out.get(check[len("ctest:"):], "not run")
    # "file::test" stands for all of its parameters, "file::test[p]" for one.
    results = [o for node, o in pytest_out.items()
               if node == check or ("[" not in check and node.startswith(check + "["))]
    if not results:
        return "not run"
    return "failed" if "failed" in results else "passed"


def run_attacks(ctest_dir: Path) -> tuple[dict, list[tuple[str, str]]]:
    checks = [c for _, cs in ATTACKS for c in cs]
    pytest_out = _run_pytest([c for c in checks if not c.startswith("ctest:") and _pytest_check_exists(c)])
    ctest_out = _run_ctest(sorted({c[len("ctest:"):] for c in checks if c.startswith("ctest:")}), ctest_dir)
    rows, tried, refused, failed = [], 0, 0, 0
    for name, cs in ATTACKS:
        outcomes = [_check_outcome(c, pytest_out, ctest_out) for c in cs]
        ran = [o for o in outcomes if o in ("passed", "failed")]
        if not ran:
            status = "not tried"
        elif "failed" in ran:
            status, tried, failed = "NOT REFUSED", tried + 1, failed + 1
        else:
            status, tried, refused = "refused", tried + 1, refused + 1
        checked = f"{len(ran)} of {len(cs)} checks ran"
        rows.append((name, f"{status} ({checked})"))
    figures = {"attacks_listed": len(ATTACKS), "attacks_tried": tried, "attacks_refused": refused,
               "attacks_failed": failed, "attacks_not_tried": len(ATTACKS) - tried}
    return figures, rows


# ---------------------------------------------------------------- the report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE", help="also write the figures as flat JSON keys")
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--fuzz-seconds", type=int, default=60)
    parser.add_argument("--ctest-dir", default=str(ROOT / "build" / "ctest"),
                        help="CTest build of the native tests (scripts/test.sh makes build/ctest); skipped if absent")
    args = parser.parse_args()

    soak = run_soak(args.soak_seconds)
    fuzz = run_fuzzers(args.fuzz_seconds)
    attacks, attack_rows = run_attacks(Path(args.ctest_dir))

    figures = {
        "soak_seconds": args.soak_seconds,
        "operations": soak["operations"],
        "threads": soak["threads"],
        **{k: v for k, v in soak.items() if k.startswith("faults_")},
        "inputs_fuzzed": fuzz["inputs_fuzzed"],
        **{k: v for k, v in fuzz.items() if k.startswith("inputs_fuzzed_")},
        "fuzz_seconds_per_target": args.fuzz_seconds,
        "fuzz_ok": fuzz["fuzz_ok"],
        **attacks,
        "bytes_verified": soak["bytes_verified"],
        "bytes_lost": soak["bytes_lost"],
        "bytes_wrong": soak["bytes_wrong"],
        # A crash is an exception escaping a soak thread, or an input that crashed a fuzzer.
        "crashes": soak["crashes"] + fuzz["fuzz_crashes"],
        "crashes_soak": soak["crashes"],
        "crashes_fuzz": fuzz["fuzz_crashes"],
        "rss_growth_mib": soak["rss_growth_mib"],
        **{k: v for k, v in soak.items() if k.startswith("engine_")},
    }
    rows = [(k, v) for k, v in figures.items()] + [(f"attack: {name}", status) for name, status in attack_rows]
    width = max(len(k) for k, _ in rows)
    print(f"| {'figure':{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:{width}} | {v} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    bad = figures["bytes_lost"] or figures["bytes_wrong"] or figures["crashes"] or figures["attacks_failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
