"""`lmcache bench`: run the benchmark scripts of an lmcache checkout.

Each selected benchmark runs as its own process with `--json OUT/NAME.json`
(plus any arguments given after `--`); its full output goes to OUT/NAME.log
and a chart of its figures to OUT/NAME.png.

    lmcache bench                     # core and disk
    lmcache bench core -- --repeats 5
    lmcache bench all --out results/
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

PROG = "lmcache bench"

# name -> (script, how long it takes on the 2-core development machine)
BENCHMARKS = {
    "core": ("bench_core.py", "~10 s: key lookup, L1 store/load vs memcpy"),
    "disk": ("bench_disk.py", "~4 minutes: fio, L2 store/load, 3 vLLM engine processes (-- --no-vllm: ~10 s)"),
    "remote": ("bench_remote.py", "~30 s: L3 store/load against its own redis-server, codecs"),
    "vllm": ("bench_vllm.py", "~7 minutes: TTFT in 4 vLLM engine processes"),
    "blend": ("bench_blend.py", "~12 minutes: blending quality, then 3 vLLM engine processes (-- --no-vllm: seconds)"),
    "throughput": ("bench_throughput.py", "~5 minutes: multi-round QA, vLLM alone vs lmcache vs two engines on a server"),
}
DEFAULT_SELECTION = ("core", "disk")
LOG_TAIL_LINES = 15


class BenchError(Exception):
    """A failure shown to the user as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block before its error; one line is easier to read in a log.
    def error(self, message: str):
        raise BenchError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                 usage=f"{PROG} [-h] [--out DIR] [--benchmarks-dir DIR] [--list] [NAME ...] [-- SCRIPT_ARGS ...]")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run: {', '.join(BENCHMARKS)} or all (default: {' '.join(DEFAULT_SELECTION)})")
    ap.add_argument("--out", default="bench-results", metavar="DIR",
                    help="folder for the JSON, log and PNG files (default: %(default)s)")
    ap.add_argument("--benchmarks-dir", metavar="DIR",
                    help="folder holding the bench_*.py scripts (default: ./benchmarks, else the checkout "
                         "lmcache was installed from)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.epilog = ("Arguments after `--` go to every selected script unchanged, so with several benchmarks\n"
                 "they must be ones each script accepts (see python benchmarks/bench_NAME.py --help).")
    return ap


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _select(names: list[str]) -> list[str]:
    for name in names:
        if name not in BENCHMARKS and name != "all":
            raise BenchError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)}, all)")
    if not names:
        return list(DEFAULT_SELECTION)
    if "all" in names:
        return list(BENCHMARKS)
    return list(dict.fromkeys(names))  # keep the order given, run each once


# --- finding the scripts ---------------------------------------------------------------------

def _installed_checkout() -> Optional[Path]:
    """The source folder of a `pip install <folder>`, from the install's PEP 610 record."""
    try:
        from importlib.metadata import distribution

        text = distribution("lmcache").read_text("direct_url.json")
        url = json.loads(text or "{}").get("url", "")
    except Exception:  # not installed, or no record: just one fewer place to look
        return None
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _candidate_dirs() -> list[Path]:
    dirs = [Path.cwd() / "benchmarks"]
    checkout = _installed_checkout()
    if checkout:
        dirs.append(checkout / "benchmarks")
    # Running from a source tree (PYTHONPATH=python): python/lmcache/bench_cli.py -> checkout root.
    dirs.append(Path(__file__).resolve().parents[2] / "benchmarks")
    return dirs


def find_benchmarks_dir(explicit: Optional[str]) -> Path:
    if explicit:
        path = Path(explicit)
        if not any((path / script).is_file() for script, _ in BENCHMARKS.values()):
            raise BenchError(f"no bench_*.py scripts in --benchmarks-dir {explicit}")
        return path.resolve()
    for path in _candidate_dirs():
        if (path / "bench_core.py").is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in dict.fromkeys(_candidate_dirs()))
    raise BenchError(f"no benchmarks folder found (looked in {looked}); "
                     "run from an lmcache checkout or pass --benchmarks-dir DIR")


# --- running one script ----------------------------------------------------------------------

def _pump(stream, lines: queue.Queue) -> None:
    # A thread reads, so that the main loop can keep the elapsed time ticking while a script is silent.
    for line in stream:
        lines.put(line)
    lines.put(None)


def _run_script(cmd: list[str], log_path: Path, bar) -> int:
    """Runs cmd, copying its output to log_path and its last line to the bar's postfix."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines arrive as printed, not at exit
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        # A session of its own: on Ctrl-C the whole tree goes (bench_vllm.py runs engines in
        # grandchildren), and it goes through _stop, not through a half-delivered SIGINT.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        # On a terminal the bar redraws in place; in a log file each redraw is a new line, so fewer.
        interval = 0.5 if sys.stderr.isatty() else 10.0
        drawn = time.monotonic()
        try:
            while True:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    # Exited and silent: done, even if a process it left behind still holds the pipe.
                    line = None if proc.poll() is not None else ""
                if line is None:
                    break
                log.write(line)
                if line.strip():
                    bar.set_postfix_str(line.strip()[:70], refresh=False)
                if time.monotonic() - drawn >= interval:
                    bar.refresh()  # also redraws the elapsed time while the script is silent
                    drawn = time.monotonic()
            return proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            raise


def _stop(proc: subprocess.Popen) -> None:
    """Ends the script's process group (the script and what it started), by its id."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(log_path: Path) -> str:
    with open(log_path, errors="replace") as f:
        tail = f.read().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join("  | " + line for line in tail)


def run_benchmark(name: str, bench_dir: Path, out_dir: Path, extra: list[str]) -> Path:
    """Runs one benchmark and charts it; returns its JSON path. Raises BenchError."""
    from tqdm import tqdm

    script = bench_dir / BENCHMARKS[name][0]
    if not script.is_file():
        raise BenchError(f"{name}: {script.name} not found in {bench_dir}")
    json_path, log_path, png_path = (out_dir / f"{name}{ext}" for ext in (".json", ".log", ".png"))
    for stale in (json_path, png_path):  # files of an earlier run must not pass for this one's
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), *extra, "--json", str(json_path)]
    with tqdm(desc=f"  {name}", total=None, position=1, leave=False, bar_format="{desc} {elapsed}{postfix}") as bar:
        code = _run_script(cmd, log_path, bar)
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        raise BenchError(f"{name}: {script.name} {how}; last lines of {log_path}:\n" + _log_tail(log_path))
    try:
        with open(json_path) as f:
            json.load(f)
    except FileNotFoundError:
        raise BenchError(f"{name}: {script.name} wrote no {json_path.name} (log: {log_path})") from None
    except ValueError as e:
        raise BenchError(f"{name}: {json_path} is not valid JSON ({e})") from None
    _chart_or_note(name, json_path, png_path)
    return json_path


def _chart_or_note(name: str, json_path: Path, png_path: Path) -> None:
    from tqdm import tqdm

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        chart(json_path, png_path, f"{BENCHMARKS[name][0]}  ({stamp})")
    except ValueError as e:
        raise BenchError(f"{name}: {e}") from None
    except ImportError as e:  # the figures are in the JSON and the log; the chart is extra
        tqdm.write(f"{PROG}: {name}: chart skipped ({e})", file=sys.stderr)


# --- charts ----------------------------------------------------------------------------------

# (panel title, test on the key): the first match wins, so `paired_overhead_ms` is a time.
_GROUPS = (
    ("bandwidth (GB/s)", lambda k: k.endswith("_gbps")),
    ("time (ms)", lambda k: k.endswith("_ms")),
    ("ns per token", lambda k: "_ns_per_token" in k),
    ("throughput (per second)", lambda k: k.endswith("_per_s")),
    ("accuracy", lambda k: k.startswith("acc_")),
    ("ratios, speed-ups, shares", lambda k: any(s in k for s in ("_vs_", "speedup", "ratio", "overhead",
                                                                 "share", "_rel"))),
)
_OTHER = "other (counts, settings)"


def _numeric_figures(results: dict) -> dict[str, float]:
    """Numbers at the top level, plus dicts of numbers (e.g. accuracy by share) as `key[sub]`.
    Deeper detail (per-configuration dicts, lists of samples) is left to the JSON."""
    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    out = {}
    for key, value in results.items():
        if is_number(value):
            out[key] = float(value)
        elif isinstance(value, dict) and value and all(is_number(v) for v in value.values()):
            out.update({f"{key}[{sub}]": float(v) for sub, v in value.items()})
    return out


def group_figures(results: dict) -> dict[str, list[tuple[str, float]]]:
    """Panel title -> [(key, value)], in the order of _GROUPS; empty panels left out."""
    panels: dict[str, list[tuple[str, float]]] = {}
    for key, value in _numeric_figures(results).items():
        base = key.split("[")[0]
        title = next((t for t, test in _GROUPS if test(base)), _OTHER)
        panels.setdefault(title, []).append((key, value))
    order = [t for t, _ in _GROUPS] + [_OTHER]
    return {t: panels[t] for t in order if t in panels}


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"  # 11,123 ms reads better than 1.11e+04


def _draw_panel(ax, title: str, items: list[tuple[str, float]]) -> None:
    keys = [k for k, _ in items]
    values = [v for _, v in items]
    ys = range(len(items))
    ax.barh(ys, values, color="tab:blue" if title != _OTHER else "tab:gray")
    ax.set_yticks(list(ys), keys, fontsize=8)
    ax.invert_yaxis()  # first key on top, as in the JSON
    ax.set_title(title, fontsize=10, loc="left")
    # Log scale where one bar would flatten the rest (a 100x speed-up next to 0.8 ratios).
    if min(values) > 0 and max(values) / min(values) >= 50:
        ax.set_xscale("log")
    if title.startswith("ratios") and max(values) >= 0.5:
        ax.axvline(1.0, color="gray", lw=0.8, ls="--")  # parity with the baseline measured in the same run
    for y, v in zip(ys, values):
        ax.annotate(" " + _fmt(v), (v, y), va="center", fontsize=7, annotation_clip=False)
    ax.margins(x=0.15)


def chart(json_path, png_path, title: str) -> None:
    """Writes a horizontal bar chart of the numeric figures in a benchmark's JSON, one panel per
    kind of figure. Raises ValueError if the JSON holds no numbers; ImportError without matplotlib."""
    # A bare Figure renders with Agg and touches no pyplot state: no display is needed, and a
    # caller's own backend and open figures stay as they were.
    from matplotlib.figure import Figure

    with open(json_path) as f:
        results = json.load(f)
    panels = group_figures(results if isinstance(results, dict) else {})
    if not panels:
        raise ValueError(f"no numeric figures in {json_path}")
    heights = [0.8 + 0.28 * len(items) for items in panels.values()]
    fig = Figure(figsize=(9, sum(heights) + 0.8))
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (panel, items) in zip(axes[:, 0], panels.items()):
        _draw_panel(ax, panel, items)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


# --- the command -----------------------------------------------------------------------------

def _print_list() -> None:
    width = max(map(len, BENCHMARKS))
    for name, (script, what) in BENCHMARKS.items():
        mark = " (default)" if name in DEFAULT_SELECTION else ""
        print(f"{name:{width}}  {script:16} {what}{mark}")


def _run_all(names: list[str], bench_dir: Path, out_dir: Path, extra: list[str]) -> int:
    from tqdm import tqdm

    failed = 0
    with tqdm(names, desc="benchmarks", unit="bench", position=0) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            t0 = time.monotonic()
            try:
                json_path = run_benchmark(name, bench_dir, out_dir, extra)
            except BenchError as e:
                failed += 1
                tqdm.write(f"{PROG}: error: {e}", file=sys.stderr)
                continue
            except OSError as e:  # e.g. the output folder filled up: the next benchmark may still fit
                failed += 1
                tqdm.write(f"{PROG}: error: {name}: {e}", file=sys.stderr)
                continue
            tqdm.write(f"{name}: done in {time.monotonic() - t0:.0f} s: {json_path.name}, {name}.png, {name}.log")
    print(f"results in {out_dir}" + (f"; {failed} of {len(names)} failed" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    own, extra = _split_passthrough(list(argv))
    try:
        args = _parser().parse_args(own)
        if args.list:
            _print_list()
            return 0
        names = _select(args.names)
        bench_dir = find_benchmarks_dir(args.benchmarks_dir)
        out_dir = Path(args.out).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        return _run_all(names, bench_dir, out_dir, extra)
    except SystemExit as e:  # --help: the dispatcher wants a return code, not an exit
        return e.code if isinstance(e.code, int) else 0
    except BenchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
