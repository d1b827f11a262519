"""Checking the segment spans handed to the blend prefill."""

from __future__ import annotations

from collections.abc import Sequence


def check_spans(spans: Sequence[tuple[int, int]], prompt_len: int) -> list[tuple[int, int]]:
    """Return the spans sorted by start, or raise ValueError naming the bad one.

    A span is [start, end) over the prompt's token positions; spans must be
    non-empty, inside the prompt and must not overlap (one position has one
    cached KV at most).
    """
    checked = []
    for span in spans:
        if len(span) != 2:
            raise ValueError(f"segment span {span!r} is not a (start, end) pair")
        start, end = int(span[0]), int(span[1])
        if not 0 <= start < end <= prompt_len:
            raise ValueError(
                f"segment span ({start}, {end}) is empty or outside the prompt of {prompt_len} tokens"
            )
        checked.append((start, end))
    checked.sort()
    for (s0, e0), (s1, e1) in zip(checked, checked[1:]):
        if s1 < e0:
            raise ValueError(f"segment spans ({s0}, {e0}) and ({s1}, {e1}) overlap")
    return checked
