#!/usr/bin/env python3
"""Footprint of edgefn-agent (issue 8; docs/benchmarks.md, "Footprint").

    scripts/footprint.py [--agent BIN] [--qemu qemu-aarch64 --sysroot /usr/aarch64-linux-gnu]
                         [--cli BIN] [--runs 11] [--load 5000] [--rate 500] [--typical-seconds 120]
                         [--config agent.toml] [--enroll CLOUD_URL TOKEN] [--skip ready,idle,load,typical]

Measures, for one agent binary (natively, or under qemu-user when --qemu is given):
  - start-to-ready: spawn `run` until GET /v1/health answers (median and spread of --runs), on a
    fresh data directory (creates the store) and on one holding 10 functions (a restart);
  - idle RSS with 10 functions deployed (each invoked once, so each has a warm instance; celsius
    mapped to an MQTT topic, counter to a once-a-minute schedule), 10 s after the last call;
  - RSS under MQTT load: --load QoS 1 readings published at a steady --rate (readings/s) into the
    MQTT-triggered celsius (which publishes each result back): peak RSS (VmHWM) and throughput.
    Not a burst: Mosquitto queues at most max_queued_messages (default 1000) QoS 1 messages per
    subscriber beyond its 20 in flight and drops the rest, so a burst faster than the agent
    consumes loses readings in the broker (that is what stalled this phase at 1,253 of 2,000);
    the broker's $SYS dropped counter is reported when readings are missing;
  - bytes written to disk per 1,000 invocations (/proc/PID/io write_bytes over that load, plus
    the data directory's growth incl. the WAL);
  - SD-card write volume of a typical workload: one reading a second into celsius plus counter
    once a minute, for --typical-seconds, scaled to an hour.
With --enroll, the agent of the idle/load/typical phases is enrolled first (`edgefn-agent enroll`
with a one-time token of `edgefn device enroll NAME`), so its telemetry upload runs (every 10 s)
and the write figures include it.
Needs Mosquitto on 127.0.0.1:1883 and mosquitto_pub, and the example functions built
(cd examples && cargo build --release --target wasm32-unknown-unknown). Under qemu-user every
RSS includes qemu's own memory (its translator and translated-code cache), so it overstates
what the same binary needs on a Pi; disk bytes are the same syscalls either way.
Data directories live under target/footprint (a real disk, not tmpfs, so write_bytes counts).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WASM = os.path.join(TOP, "examples/target/wasm32-unknown-unknown/release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def health(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kib(v):
    return int(v.split()[0])


def rss_breakdown(pid, binary):
    """Where the resident memory is, from /proc/PID/smaps: the agent's own file (its code and
    read-only data), other files (libc, ...), the main heap ([heap], glibc's main arena), thread
    stacks (anonymous mappings directly above a guard page), other anonymous memory (glibc's
    per-thread arenas, large allocations that malloc mmaps, wasmi linear memories) and shared
    memory (SQLite's WAL index). KiB."""
    out = {"binary": 0, "libs": 0, "heap": 0, "stacks": 0, "anon": 0, "shm": 0}
    binary = os.path.realpath(binary)
    prev_guard_end = None
    cur = None
    anon = []  # (rss, size) of each anonymous mapping, for the biggest ones
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                perms, path = fields[1], " ".join(fields[5:])
                if path == binary:
                    cur = "binary"
                elif path == "[heap]":
                    cur = "heap"
                elif path.startswith("/dev/shm") or path.endswith("-shm") or perms[3] == "s":
                    cur = "shm"
                elif path.startswith("/") or path.startswith("["):
                    cur = "libs"
                elif lo == prev_guard_end:
                    cur = "stacks"
                else:
                    cur = "anon"
                    anon.append([0, (hi - lo) >> 10])
                prev_guard_end = hi if perms.startswith("---p") and hi - lo <= 64 << 10 else None
            elif fields[0] == "Rss:":
                out[cur] += int(fields[1])
                if cur == "anon":
                    anon[-1][0] = int(fields[1])
    anon.sort(reverse=True)
    out["biggest anon (rss/size)"] = " ".join(f"{r}/{z}" for r, z in anon[:6])
    return out


def proc_io(pid):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v)
    return out


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class Agent:
    def __init__(self, args, data_dir, mqtt="none", http="off", extra=()):
        self.args = args
        self.port = free_port()
        self.data_dir = data_dir
        cmd = self.prefix(args.agent) + [
            "run", "--data-dir", data_dir, "--api", f"127.0.0.1:{self.port}",
            "--http", http, "--mqtt", mqtt, *extra,
        ] + (["--config", args.config] if args.config else [])
        self.log = open(os.path.join(os.path.dirname(data_dir), os.path.basename(data_dir) + ".log"), "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def prefix(self, binary):
        if self.args.qemu:
            return [self.args.qemu, "-L", self.args.sysroot, binary]
        return [binary]

    def wait_ready(self, timeout=120):
        while time.monotonic() - self.t0 < timeout:
            if health(self.port):
                return time.monotonic() - self.t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}")
            time.sleep(0.001)
        raise RuntimeError("agent not ready in time")

    def cli(self, *argv, check=True):
        cli = self.args.cli or self.args.agent
        cmd = ([cli] if self.args.cli else self.prefix(cli)) + list(argv) + [
            "--agent", self.url, "--data-dir", self.data_dir]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv}: {r.stderr}")
        return r.stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


FUNCTIONS = [
    ("echo", "echo"), ("celsius", "celsius"), ("alert", "threshold_alert"), ("counter", "counter"),
    ("average", "rolling_average"), ("echo2", "echo"), ("echo3", "echo"), ("echo4", "echo"),
    ("celsius2", "celsius"), ("counter2", "counter"),
]


def deploy_ten(agent, topic):
    for name, module in FUNCTIONS:
        agent.cli("function", "create", name, "--module", os.path.join(WASM, module + ".wasm"))
    for name, _ in FUNCTIONS:
        data = '{"seq":1,"ts_us":5,"temp":21.5,"value":1}'
        agent.cli("invoke", name, "--data", data, check=False)
    agent.cli("mapping", "create", "--function", "celsius", "--mqtt", f"{topic}/+", "--qos", "1")
    agent.cli("mapping", "create", "--function", "counter", "--every", "1m")


def broker_dropped():
    """Mosquitto's count of messages it dropped (queue limits), from $SYS (retained, refreshed
    every sys_interval, 10 s by default); None if it has not published one (nothing dropped)."""
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-C", "1", "-W", "3",
                        "-t", "$SYS/broker/publish/messages/dropped"], capture_output=True, text=True)
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else None


def paced_publish(topic, count, rate):
    """QoS 1 readings through one mosquitto_pub -l at a steady rate: lines written in 10 ms
    slices, each slice on time (catching up if the writer falls behind)."""
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", "-l", "-t", topic],
                           stdin=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            pub.stdin.write("".join(f'{{"seq":{i},"ts_us":5,"temp":21.5}}\n' for i in range(sent, due)))
            pub.stdin.flush()
            sent = due
        time.sleep(0.01)
    pub.stdin.close()
    pub.wait()


def invocations(agent, name):
    doc = json.loads(agent.cli("stats", name, "--window", "1h", "--json"))
    return doc["totals"]["invocations"]


def wait_invocations(agent, name, target, timeout):
    deadline = time.monotonic() + timeout
    n = invocations(agent, name)
    while n < target and time.monotonic() < deadline:
        time.sleep(0.5)
        n = invocations(agent, name)
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default=os.path.join(TOP, "target/release/edgefn-agent"))
    p.add_argument("--cli", help="native binary for the CLI verbs (default: --agent, under qemu if given)")
    p.add_argument("--config", help="agent config file passed to `run --config` (e.g. [store] cache_kib)")
    p.add_argument("--enroll", nargs=2, metavar=("CLOUD_URL", "TOKEN"),
                   help="enroll the measured agent (upload on) with a one-time token first")
    p.add_argument("--qemu")
    p.add_argument("--sysroot")
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--load", type=int, default=5000)
    p.add_argument("--rate", type=float, default=500, help="readings/s of the load phase")
    p.add_argument("--typical-seconds", type=int, default=120)
    p.add_argument("--skip", default="", help="comma list of: ready,idle,load,typical")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = os.path.join(TOP, "target/footprint", str(os.getpid()))
    os.makedirs(work)
    label = f"{os.path.basename(args.agent)} ({args.qemu or 'native'})"
    size = os.path.getsize(args.agent)
    print(f"# {label}: {args.agent}, {size} bytes ({size / 2**20:.2f} MiB)")
    result = {"binary_bytes": size}

    if "ready" not in skip:
        fresh, warm = [], []
        seeded = os.path.join(work, "seeded")
        a = Agent(args, seeded)
        a.wait_ready()
        deploy_ten(a, "footprint/ready")
        a.stop()
        for i in range(args.runs):
            d = os.path.join(work, f"fresh{i}")
            a = Agent(args, d)
            fresh.append(a.wait_ready())
            a.stop()
            a = Agent(args, seeded)
            warm.append(a.wait_ready())
            a.stop()
        for name, xs in (("fresh data dir", fresh), ("10 functions", warm)):
            ms = sorted(x * 1000 for x in xs)
            print(f"start-to-ready ({name}): median {statistics.median(ms):.1f} ms, "
                  f"min {ms[0]:.1f}, max {ms[-1]:.1f} ({len(ms)} runs)")
        result["ready_ms_fresh"] = statistics.median(fresh) * 1000
        result["ready_ms_warm"] = statistics.median(warm) * 1000

    if skip >= {"idle", "load", "typical"}:
        return
    topic = f"footprint/{os.getpid()}/in"
    d = os.path.join(work, "main")
    if args.enroll:
        cli = [args.cli] if args.cli else ([args.qemu, "-L", args.sysroot, args.agent] if args.qemu else [args.agent])
        subprocess.run(cli + ["enroll", "--cloud", args.enroll[0], "--token", args.enroll[1], "--data-dir", d],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"enrolled with {args.enroll[0]} (telemetry upload on)")
    a = Agent(args, d, mqtt="mqtt://127.0.0.1:1883", http="127.0.0.1:0")
    a.wait_ready()
    pid = a.proc.pid
    try:
        deploy_ten(a, topic)
        time.sleep(1)
        if "idle" not in skip:
            time.sleep(10)
            st = proc_status(pid)
            print(f"idle with 10 functions: RSS {kib(st['VmRSS']) / 1024:.1f} MiB "
                  f"(peak so far {kib(st['VmHWM']) / 1024:.1f} MiB), {st['Threads']} threads")
            result["idle_rss_kib"] = kib(st["VmRSS"])
            if not args.qemu:
                b = rss_breakdown(pid, args.agent)
                print("idle RSS by kind (KiB): " + ", ".join(f"{k} {v}" for k, v in b.items()))
                result["idle_rss_breakdown_kib"] = b

        if "load" not in skip:
            before = invocations(a, "celsius")
            io0, size0 = proc_io(pid), dir_bytes(d)
            dropped0 = broker_dropped()
            t0 = time.monotonic()
            peak = [0]
            stop_sampling = [False]

            def sample():
                while not stop_sampling[0]:
                    peak[0] = max(peak[0], kib(proc_status(pid)["VmRSS"]))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            paced_publish(f"{topic}/load", args.load, args.rate)
            deadline = time.monotonic() + 120
            n = invocations(a, "celsius")
            while n < before + args.load and time.monotonic() < deadline:
                time.sleep(0.2)
                n = invocations(a, "celsius")
            elapsed = time.monotonic() - t0
            stop_sampling[0] = True
            sampler.join()
            peak = peak[0]
            done = n - before
            if done < args.load:
                time.sleep(11)  # $SYS is refreshed every 10 s
                print(f"missing {args.load - done} readings; Mosquitto's dropped counter "
                      f"{dropped0} -> {broker_dropped()}")
            time.sleep(2)  # let the last group commit and outbox deletes land
            io1, size1 = proc_io(pid), dir_bytes(d)
            st = proc_status(pid)
            print(f"MQTT load: {done} of {args.load} readings in {elapsed:.1f} s ({done / elapsed:.0f}/s); "
                  f"RSS peak sampled {peak / 1024:.1f} MiB, VmHWM {kib(st['VmHWM']) / 1024:.1f} MiB, "
                  f"after {kib(st['VmRSS']) / 1024:.1f} MiB")
            per = 1000 / max(done, 1)
            wb = (io1["write_bytes"] - io0["write_bytes"]) * per
            wc = (io1["wchar"] - io0["wchar"]) * per
            grow = (size1 - size0) * per
            print(f"per 1,000 MQTT-triggered invocations: write_bytes {wb / 1024:.0f} KiB, "
                  f"write() bytes {wc / 1024:.0f} KiB, data dir growth {grow / 1024:.0f} KiB")
            result.update(load_rss_hwm_kib=kib(st["VmHWM"]), load_rate=done / elapsed,
                          write_bytes_per_1000=wb, wchar_per_1000=wc, growth_per_1000=grow)

        if "typical" not in skip:
            io0 = proc_io(pid)
            t0 = time.monotonic()
            i = 0
            pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", "-l", "-t", f"{topic}/typical"],
                                   stdin=subprocess.PIPE, text=True)
            while time.monotonic() - t0 < args.typical_seconds:
                pub.stdin.write(f'{{"seq":{i},"ts_us":5,"temp":21.5}}\n')
                pub.stdin.flush()
                i += 1
                time.sleep(max(0, t0 + i - time.monotonic()))
            pub.stdin.close()
            pub.wait()
            time.sleep(2)
            io1 = proc_io(pid)
            secs = time.monotonic() - t0
            per_hour = (io1["write_bytes"] - io0["write_bytes"]) * 3600 / secs
            print(f"typical workload (1 reading/s into celsius + counter every minute, {secs:.0f} s): "
                  f"{per_hour / 2**20:.1f} MiB written per hour ({per_hour / 2**30 * 24:.2f} GiB/day)")
            result["typical_write_bytes_per_hour"] = per_hour
    finally:
        a.stop()
        print("# json " + json.dumps(result))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
