#!/usr/bin/env python3
"""Where the bytes of an (unstripped) agent binary go, per crate (issue 8; docs/benchmarks.md,
"Footprint"). A `cargo bloat --crates`-style count without cargo-bloat:

    scripts/crate-sizes.py BINARY [--prefix aarch64-linux-gnu-] [--top 30] [--symbols 25]

BINARY must still have its symbol table: build it, then relink the agent alone without stripping
(only the agent crate is rebuilt):

    cargo rustc --release -p edgefn-agent --bin edgefn-agent --target aarch64-unknown-linux-gnu \\
        -- -C strip=none

Each function or object symbol (`nm -S -C`) is counted for the crate its path starts with
(`<T as Trait>::f` for T's crate), symbols without a Rust path for "[C and other]" (bundled SQLite,
ring's C and assembly, libc glue). Generic code is counted where it was instantiated, so `core`,
`alloc`, `std` and the agent carry inlined code of their callers and callees. Unwind tables
(.eh_frame FDEs) are counted for the crate of the function they describe.
"""

import argparse
import bisect
import collections
import re
import subprocess


def crate_of(name):
    n = name
    while True:
        m = re.match(r"^(<|&|\*const |\*mut |mut |dyn |\(|\[)+", n)
        if not m:
            break
        n = n[m.end():]
    if "::" not in n:
        return "[C and other]"
    head = n.split("::", 1)[0]
    head = re.split(r"[ <>,;]", head)[0]
    return head or "[C and other]"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--prefix", default="", help="binutils prefix, e.g. aarch64-linux-gnu-")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--symbols", type=int, default=25)
    a = p.parse_args()

    out = subprocess.run([a.prefix + "nm", "-S", "-C", "--defined-only", a.binary],
                         capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4:
            continue
        addr, size, kind, name = parts
        syms.append((int(addr, 16), int(size, 16), kind, name))
    if not syms:
        raise SystemExit(f"{a.binary} has no symbols (stripped?)")
    syms.sort()

    code = collections.Counter()
    data = collections.Counter()
    for _, size, kind, name in syms:
        (code if kind in "tTwW" else data)[crate_of(name)] += size

    # Unwind tables: FDE sizes by the crate of the function at their pc.
    eh = collections.Counter()
    frames = subprocess.run([a.prefix + "readelf", "--debug-dump=frames", a.binary],
                            capture_output=True, text=True).stdout
    starts = [s[0] for s in syms]
    fde = re.compile(r"^[0-9a-f]+ ([0-9a-f]+) [0-9a-f]+ FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.")
    for line in frames.splitlines():
        m = fde.match(line)
        if not m:
            continue
        length, pc = int(m.group(1), 16) + 4, int(m.group(2), 16)
        i = bisect.bisect_right(starts, pc) - 1
        eh[crate_of(syms[i][3]) if i >= 0 else "[unknown]"] += length

    total_code = sum(code.values())
    print(f"{'crate':32} {'code KiB':>9} {'share':>6} {'data KiB':>9} {'eh_frame KiB':>12}")
    for crate, size in code.most_common(a.top):
        print(f"{crate:32} {size / 1024:9.1f} {100 * size / total_code:5.1f}% "
              f"{data[crate] / 1024:9.1f} {eh[crate] / 1024:12.1f}")
    rest = total_code - sum(s for _, s in code.most_common(a.top))
    print(f"{'(other crates)':32} {rest / 1024:9.1f} {100 * rest / total_code:5.1f}%")
    print(f"{'total':32} {total_code / 1024:9.1f} {'':6} {sum(data.values()) / 1024:9.1f} "
          f"{sum(eh.values()) / 1024:12.1f}")
    print()
    print("largest symbols:")
    for _, size, kind, name in sorted(syms, key=lambda s: -s[1])[: a.symbols]:
        print(f"{size / 1024:8.1f} KiB {kind} {name[:140]}")


if __name__ == "__main__":
    main()
