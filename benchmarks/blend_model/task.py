"""The synthetic "what follows k" task the blend model is trained and judged on.

A prompt is BOS, a short system run, then passages of random content tokens,
then questions ``Q k`` whose answer is the token that followed ``k`` in the
context. All content tokens of one context are distinct, so every question
has exactly one answer, and it can only be found by reading the context
(an induction head: find ``k``, copy what came after it).

Training asks about any position and copies spans of several tokens after
``Q`` so that every copied token is a next-token target. Evaluation asks about
the last token of a passage only: its answer is the first token of the next
passage, whose KV computed with the passage alone never saw ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS = 0
Q = 1
FIRST_CONTENT = 2
VOCAB_SIZE = 258  # two special tokens and 256 content tokens
IGNORE = -100  # label of a position that is not a target

SYSTEM_LEN = (4, 8)
PASSAGES = 6
PASSAGE_LEN = (8, 24)


@dataclass
class Prompt:
    """One evaluation prompt: token ids, passage spans and the expected answer."""

    ids: list[int]
    spans: list[tuple[int, int]]  # [start, end) of each passage in ids
    answer: int


def _context(gen: torch.Generator, passages: int = PASSAGES) -> tuple[list[int], list[tuple[int, int]]]:
    """BOS, a system run and the passages, all content tokens distinct."""
    sys_len = int(torch.randint(SYSTEM_LEN[0], SYSTEM_LEN[1] + 1, (1,), generator=gen))
    lens = torch.randint(PASSAGE_LEN[0], PASSAGE_LEN[1] + 1, (passages,), generator=gen).tolist()
    n = sys_len + sum(lens)
    content = (torch.randperm(VOCAB_SIZE - FIRST_CONTENT, generator=gen)[:n] + FIRST_CONTENT).tolist()
    ids = [BOS] + content
    spans = []
    start = 1 + sys_len
    for length in lens:
        spans.append((start, start + length))
        start += length
    return ids, spans


def training_sequence(gen: torch.Generator, n_questions: int = 16,
                      copy_len: tuple[int, int] = (2, 8)) -> tuple[list[int], list[int]]:
    """A context of 1 to PASSAGES passages followed by questions that copy runs of it.

    Each question is ``Q`` and then a run of context tokens starting at a
    random position; every token of the run after the first is a target, so
    the loss teaches "what follows k" at every position of the context.
    Short contexts make the first steps of learning easy (attention has few
    places to look); the mix of lengths keeps positions varied, so the model
    cannot lean on where things usually are.
    Returns (ids, labels) where labels[i] is the target for position i.
    """
    ids, _ = _context(gen, passages=int(torch.randint(1, PASSAGES + 1, (1,), generator=gen)))
    context_len = len(ids)
    labels = [IGNORE] * context_len
    for _ in range(n_questions):
        length = int(torch.randint(copy_len[0], copy_len[1] + 1, (1,), generator=gen))
        start = int(torch.randint(1, context_len - length + 1, (1,), generator=gen))
        run = ids[start:start + length]
        ids.append(Q)
        labels.append(IGNORE)
        for j, tok in enumerate(run):
            ids.append(tok)
            # The token at this position predicts the next token of the run.
            labels.append(run[j + 1] if j + 1 < length else IGNORE)
    return ids, labels


def training_batch(gen: torch.Generator, batch: int, n_questions: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch of training sequences (pad labels are ignored)."""
    seqs = [training_sequence(gen, n_questions) for _ in range(batch)]
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((batch, width), BOS, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    for row, (s, lab) in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        labels[row, : len(lab)] = torch.tensor(lab)
    return ids, labels


def boundary_prompt(gen: torch.Generator) -> Prompt:
    """A prompt whose question asks for the token after a passage's last token."""
    ids, spans = _context(gen)
    i = int(torch.randint(0, PASSAGES - 1, (1,), generator=gen))
    k = ids[spans[i][1] - 1]
    answer = ids[spans[i + 1][0]]
    return Prompt(ids=ids + [Q, k], spans=spans, answer=answer)


def inner_prompt(gen: torch.Generator) -> Prompt:
    """A prompt whose question asks about a position inside the context."""
    ids, spans = _context(gen)
    pos = int(torch.randint(1, len(ids) - 1, (1,), generator=gen))
    return Prompt(ids=ids + [Q, ids[pos]], spans=spans, answer=ids[pos + 1])
