#!/usr/bin/env python3
"""Share of a relay's CPU samples spent under given functions, from `perf record` files
(bench/ab.sh with PERF_OUT): a share holds when the machine's speed drifts, req/s and µs do
not. A sample counts for a pattern when any frame of its stack contains the pattern.

    bench/share.py /tmp/perf/*.data -- Journal::append hash_key from_response_bytes
"""
import collections
import subprocess
import sys

args = sys.argv[1:]
if "--" not in args:
    sys.exit(__doc__)
split = args.index("--")
files, patterns = args[:split], args[split + 1:]
print("file".ljust(28) + "samples".rjust(9) + "".join(p[-22:].rjust(24) for p in patterns))
for path in files:
    script = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    total, hits = 0, collections.Counter()
    for stack in script.split("\n\n"):
        if not stack.strip():
            continue
        total += 1
        for p in patterns:
            if p in stack:
                hits[p] += 1
    row = path.rsplit("/", 1)[-1].ljust(28) + str(total).rjust(9)
    row += "".join(f"{100 * hits[p] / max(total, 1):23.1f}%" for p in patterns)
    print(row)
