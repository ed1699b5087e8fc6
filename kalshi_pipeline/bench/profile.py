"""Read a py-spy profile (raw collapsed stacks, `--threads`) as text: where the time goes.

`python -m kalshi_pipeline.bench.profile FILE [--top N] [--match TEXT]` prints, per thread, the
share of samples, then the functions with the most samples on the stack (inclusive) and on top of
it (self). The benchmark writes such a summary next to every profile it records (`--profile`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

THREAD = re.compile(r"^thread \((0x[0-9a-fA-F]+)\)(?: \"?([^\";]*)\"?)?$")
LOCATION = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (file.py)`: lines merged, so a function is one row."""
    m = LOCATION.match(frame)
    if not m:
        return frame
    name, path = m.groups()
    return f"{name} ({path.rsplit('/', 1)[-1]})"


def summarize(path: Path, top: int = 25, match: str | None = None) -> str:
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = "main"
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            thread = frames[0]
            frames = frames[1:]
        if match and match not in stack:
            continue
        total += n
        names = [_function(f) for f in frames]
        threads[thread] += n
        for name in set(names):
            inclusive[name] += n
        if names:
            self_time[names[-1]] += n
    if total == 0:
        return f"{path}: no samples"
    out = [f"{path.name}: {total} samples" + (f" matching {match!r}" if match else "")]
    out.append("threads:")
    out += [f"  {n / total:6.1%}  {t}" for t, n in threads.most_common()]
    out.append(f"top {top} inclusive (on the stack):")
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    out.append(f"top {top} self (on top of the stack):")
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_time.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.profile")
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", help="only stacks containing this text (e.g. a thread id)")
    args = p.parse_args(argv)
    print(summarize(args.file, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
