"""`lmcache bench` (lmcache.bench_cli) and the demo's TTFT chart (lmcache.demo.chart)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmcache.bench_cli import chart, group_figures
from lmcache.demo.chart import write_ttft_chart

ROOT = Path(__file__).resolve().parents[2]  # the checkout: benchmarks/ lives here
# The `lmcache` dispatcher is not wired to `bench` yet, so the tests call main() the way it will.
RUN = "import sys; from lmcache.bench_cli import main; sys.exit(main(sys.argv[1:]))"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_bench(*args, cwd=ROOT, timeout=120):
    return subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_png(path: Path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def assert_one_error_line(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_core_benchmark_writes_json_log_and_png(tmp_path):
    # One 32 MiB chunk and 2 repeats: a few seconds instead of the default run.
    proc = run_bench("core", "--out", str(tmp_path), "--", "--repeats", "2", "--chunks", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "core.json").read_text())
    assert results["chunks_per_call"] == 1 and results["l1_store_gbps"] > 0
    assert "l1_store_gbps" in (tmp_path / "core.log").read_text()
    assert_png(tmp_path / "core.png")


def test_help_exits_zero():
    proc = run_bench("--help")
    assert proc.returncode == 0
    assert "lmcache bench" in proc.stdout and "--out" in proc.stdout and "core" in proc.stdout


def test_list_names_every_benchmark():
    proc = run_bench("--list")
    assert proc.returncode == 0
    for name in ("core", "disk", "remote", "vllm", "blend"):
        assert name in proc.stdout


def test_unknown_benchmark_is_one_line(tmp_path):
    line = assert_one_error_line(run_bench("nosuch", "--out", str(tmp_path)))
    assert "nosuch" in line and "core" in line  # says what was wrong and what would be right


def test_unknown_option_is_one_line(tmp_path):
    line = assert_one_error_line(run_bench("--no-such-option", "--out", str(tmp_path)))
    assert "--no-such-option" in line


def test_missing_benchmarks_dir_is_one_line(tmp_path):
    line = assert_one_error_line(run_bench("core", "--benchmarks-dir", str(tmp_path / "none")))
    assert "benchmarks-dir" in line


def fake_benchmarks(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "bench_core.py").write_text(body)
    return folder


def test_failed_script_shows_exit_code_and_log_tail(tmp_path):
    folder = fake_benchmarks(tmp_path, "print('loading the model')\nprint('out of patience')\nraise SystemExit(3)\n")
    proc = run_bench("core", "--benchmarks-dir", str(folder), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "exit code 3" in proc.stderr and "out of patience" in proc.stderr
    assert "out of patience" in (tmp_path / "out" / "core.log").read_text()


@pytest.mark.parametrize("body, says", [
    ("print('forgot the json')\n", "wrote no core.json"),
    ("import sys\nopen(sys.argv[-1], 'w').write('{not json')\n", "not valid JSON"),
])
def test_missing_or_invalid_json_is_reported(tmp_path, body, says):
    folder = fake_benchmarks(tmp_path, body)
    proc = run_bench("core", "--benchmarks-dir", str(folder), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], proc.stderr


HAND_MADE = {
    "l1_store_gbps": 12.5, "memcpy_gbps": 13.1,
    "ttft_recompute_ms": 9422.0, "ttft_lmcache_l1_ms": 18.9, "paired_overhead_ms": -1.8,
    "lookup_ns_per_token_100k": 0.8,
    "lookup_speedup_vs_sha256": 87.0, "l1_store_vs_memcpy": 0.97, "zero_reuse_overhead": -0.06,
    "acc_full": 1.0, "acc_blend_by_share": {"0.05": 0.9, "0.15": 1.0},
    "chunks_per_call": 8,
    "l2_backend": "io_uring", "multi_later_all_ms": [80.1, 81.2], "per_config": {"lmcache": {"x_ms": 1.0}},
    "ok": True,
}


def test_figures_are_grouped_by_kind():
    panels = {title: [k for k, _ in items] for title, items in group_figures(HAND_MADE).items()}
    assert panels["bandwidth (GB/s)"] == ["l1_store_gbps", "memcpy_gbps"]
    assert panels["time (ms)"] == ["ttft_recompute_ms", "ttft_lmcache_l1_ms", "paired_overhead_ms"]
    assert panels["ns per token"] == ["lookup_ns_per_token_100k"]
    assert panels["ratios, speed-ups, shares"] == ["lookup_speedup_vs_sha256", "l1_store_vs_memcpy",
                                                  "zero_reuse_overhead"]
    assert panels["accuracy"] == ["acc_full", "acc_blend_by_share[0.05]", "acc_blend_by_share[0.15]"]
    assert panels["other (counts, settings)"] == ["chunks_per_call"]
    everything = [k for keys in panels.values() for k in keys]
    # Strings, lists, booleans and nested per-configuration detail stay in the JSON only.
    assert not {"l2_backend", "multi_later_all_ms", "ok"} & set(everything)
    assert not any(k.startswith("per_config") for k in everything)


def test_chart_of_hand_made_json(tmp_path):
    src = tmp_path / "hand.json"
    src.write_text(json.dumps(HAND_MADE))
    chart(src, tmp_path / "hand.png", "hand-made")
    assert_png(tmp_path / "hand.png")


def test_chart_of_json_without_numbers_raises(tmp_path):
    src = tmp_path / "empty.json"
    src.write_text(json.dumps({"backend": "io_uring"}))
    with pytest.raises(ValueError, match="no numeric figures"):
        chart(src, tmp_path / "empty.png", "empty")


DEMO_TABLE = [("without lmcache", 9422.0, 9380.0), ("with lmcache, cold", 3300.0, 60.0),
              ("with lmcache, warm", 19.0, 18.5), ("lmcache, new process", 34.0, 33.0)]


def test_demo_chart_on_synthetic_table(tmp_path):
    path = str(tmp_path / "ttft.png")
    assert write_ttft_chart(DEMO_TABLE, path) == path
    assert_png(Path(path))


def test_demo_chart_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert write_ttft_chart(DEMO_TABLE, str(tmp_path / "ttft.png")) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "chart skipped" in out[0] and "matplotlib" in out[0]
    assert not (tmp_path / "ttft.png").exists()


def test_demo_chart_unwritable_path_does_not_raise(tmp_path, capsys):
    assert write_ttft_chart(DEMO_TABLE, str(tmp_path / "no-such-dir" / "ttft.png")) is None
    assert "chart skipped" in capsys.readouterr().out


def test_demo_has_chart_option(capsys):
    from lmcache.demo import run_demo

    with pytest.raises(SystemExit) as exit_info:
        run_demo(["--help"])
    assert exit_info.value.code == 0
    assert "--chart" in capsys.readouterr().out
