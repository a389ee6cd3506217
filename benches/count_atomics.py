#!/usr/bin/env python3
"""Atomic read-modify-writes a callgrind run executed in one shared object.

    count_atomics.py CALLGRIND_OUT OBJECT_SUBSTRING

CALLGRIND_OUT comes from `valgrind --tool=callgrind --dump-instr=yes`; prints how many times
instructions with a `lock` prefix (or an `xchg` with memory, implicitly locked) ran in the
objects whose path contains OBJECT_SUBSTRING. Each costs several nanoseconds on its own
(measured: ~4.5 ns back to back on the bench machine), a cost the instruction count does not
show: the mutexes, reference counts and shared counters of a turn. benches/run-agents.sh
(instructions) runs it for N and 2N turns and prints the difference over N.
"""
import re
import subprocess
import sys


def executed(path):
    """(object path -> {instruction address: times run}) from a --dump-instr=yes profile."""
    names, counts = {}, {}
    ob, prev, skip_next = None, 0, False
    with open(path) as f:
        for line in f:
            if line.startswith(("ob=", "cob=")):
                # An object's name is given once, where its id first appears (either line).
                m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                if line.startswith("ob="):
                    ob = m.group(1)
                continue
            if line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            a = parts[0]
            if a == "*":
                addr = prev
            elif a[0] in "+-":
                addr = prev + int(a, 0)
            else:
                addr = int(a, 16)
            prev = addr
            if skip_next:
                skip_next = False
                continue
            if len(parts) >= 3:
                per = counts.setdefault(ob, {})
                per[addr] = per.get(addr, 0) + int(parts[2])
    return {names.get(k, k): v for k, v in counts.items()}


def locked_instructions(obj):
    """Addresses of the locked instructions in `obj`'s code."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                         capture_output=True, text=True, check=True).stdout
    locked = set()
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(lock |xchg\s+%\w+,(0x[0-9a-f]+)?\()", line)
        if m:
            locked.add(int(m.group(1), 16))
    return locked


def main():
    profile, want = sys.argv[1], sys.argv[2]
    total = 0
    for obj, per in executed(profile).items():
        if want in obj and obj.startswith("/"):
            locked = locked_instructions(obj)
            total += sum(n for addr, n in per.items() if addr in locked)
    print(total)


if __name__ == "__main__":
    main()
