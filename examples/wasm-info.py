#!/usr/bin/env python3
"""Print what matters about an edgefn module: size, memory pages, imports, exports, stack.

Usage: python3 wasm-info.py FILE.wasm...   (no dependencies; wasm-objdump does the same, more)
"""
import sys

KINDS = {0: "func", 1: "table", 2: "memory", 3: "global"}


def leb(b, i):
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def sleb(b, i):
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, i


def name(b, i):
    n, i = leb(b, i)
    return b[i : i + n].decode("utf-8", "replace"), i + n


def limits(b, i):
    flags, i = leb(b, i)
    lo, i = leb(b, i)
    hi = None
    if flags & 1:
        hi, i = leb(b, i)
    return (lo, hi), i


def info(path):
    b = open(path, "rb").read()
    assert b[:4] == b"\0asm", f"{path}: not a wasm module"
    out = {"size": len(b), "imports": [], "exports": [], "memory": None, "globals": [], "data": []}
    i = 8
    while i < len(b):
        sid = b[i]
        size, i = leb(b, i + 1)
        end = i + size
        if sid == 2:  # imports
            n, i = leb(b, i)
            for _ in range(n):
                mod, i = name(b, i)
                nm, i = name(b, i)
                kind = b[i]
                i += 1
                if kind == 0:
                    _, i = leb(b, i)
                elif kind == 1:
                    i += 1
                    _, i = limits(b, i)
                elif kind == 2:
                    out["memory"], i = limits(b, i)
                else:
                    i += 2
                out["imports"].append(f"{mod}.{nm}")
        elif sid == 5:  # memory
            n, i = leb(b, i)
            if n:
                out["memory"], i = limits(b, i)
        elif sid == 6:  # globals: value types and i32.const initialisers
            n, i = leb(b, i)
            for _ in range(n):
                i += 2  # type, mutability
                op = b[i]
                i += 1
                v = None
                if op == 0x41:
                    v, i = sleb(b, i)
                elif op == 0x42:
                    v, i = sleb(b, i)
                while b[i] != 0x0B:
                    i += 1
                i += 1
                out["globals"].append(v)
        elif sid == 7:  # exports
            n, i = leb(b, i)
            for _ in range(n):
                nm, i = name(b, i)
                kind = b[i]
                _, i = leb(b, i + 1)
                out["exports"].append(f"{nm}({KINDS.get(kind, kind)})")
        elif sid == 11:  # data segments (active, memory 0, i32.const offset)
            n, i = leb(b, i)
            for _ in range(n):
                flags, i = leb(b, i)
                off = None
                if flags in (0, 2):
                    if flags == 2:
                        _, i = leb(b, i)
                    if b[i] == 0x41:
                        off, i = sleb(b, i + 1)
                    while b[i] != 0x0B:
                        i += 1
                    i += 1
                ln, i = leb(b, i)
                i += ln
                out["data"].append((off, ln))
        i = end
    return out


def main():
    for path in sys.argv[1:]:
        m = info(path)
        lo, hi = m["memory"] or (None, None)
        data = [(o, n) for o, n in m["data"] if o is not None]
        data_end = max((o + n for o, n in data), default=0)
        sp = m["globals"][0] if m["globals"] else None
        print(f"{path}")
        print(f"  size           {m['size']} bytes")
        print(f"  memory         initial {lo} page(s) ({(lo or 0) * 64} KiB), max {hi if hi is not None else 'none'}")
        print(f"  stack pointer  {sp} (first global), data segments end at {data_end}")
        print(f"  imports        {', '.join(m['imports']) or '-'}")
        print(f"  exports        {', '.join(m['exports'])}")


if __name__ == "__main__":
    main()
