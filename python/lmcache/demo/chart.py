"""The demo's TTFT chart: mean and median time to first token per run.

Kept apart from the demo so that it can be tried on a made-up table in a
second, without the ten-minute vLLM runs.
"""

from __future__ import annotations

from typing import Optional, Sequence

# A run without lmcache and a warm one differ by 100x or more: on a linear
# axis the lmcache bars would be invisible.
LOG_SCALE_SPREAD = 20.0


def _draw(rows: Sequence[tuple[str, float, float]], path: str, title: str) -> None:
    # A bare Figure renders with Agg and needs no pyplot state: the demo may run over ssh, with no display.
    from matplotlib.figure import Figure

    labels = [r[0] for r in rows]
    means = [r[1] for r in rows]
    medians = [r[2] for r in rows]
    xs = range(len(rows))
    width = 0.38
    fig = Figure(figsize=(1.9 * len(rows) + 2.5, 4.5))
    ax = fig.subplots()
    for offset, values, name in ((-width / 2, means, "mean"), (width / 2, medians, "median")):
        bars = ax.bar([x + offset for x in xs], values, width, label=name)
        ax.bar_label(bars, [f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values], fontsize=8)
    values = [v for v in means + medians if v > 0]
    if values and max(values) / min(values) >= LOG_SCALE_SPREAD:
        ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=9)
    ax.set_ylabel("time to first token (ms)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_ttft_chart(rows: Sequence[tuple[str, float, float]], path: str,
                     title: str = "lmcache demo: time to first token") -> Optional[str]:
    """rows: (run label, mean TTFT ms, median TTFT ms). Returns the path written, or None after
    printing one line saying why the chart was skipped: a chart must never fail the demo,
    whose table is already on the screen."""
    try:
        _draw(rows, path, title)
    except ImportError as e:
        print(f"chart skipped: matplotlib is not available ({e}); pip install matplotlib for {path}")
        return None
    except Exception as e:  # a full disk or a bad path: say so, keep the demo's result
        print(f"chart skipped: could not write {path} ({type(e).__name__}: {e})")
        return None
    return path
