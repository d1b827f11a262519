"""What the atheris targets share."""

import os
import tempfile


def with_scratch_corpus(argv: list[str], name: str) -> list[str]:
    """libFuzzer writes the new inputs it finds into the first corpus
    directory: put a scratch one first, so the seeds stay as checked in
    (scripts/fuzz.sh does the same; this covers a target run by hand)."""
    dirs = [i for i, a in enumerate(argv) if i > 0 and not a.startswith("-") and os.path.isdir(a)]
    if not dirs:
        return argv
    return argv[: dirs[0]] + [tempfile.mkdtemp(prefix=f"{name}-corpus-")] + argv[dirs[0]:]
