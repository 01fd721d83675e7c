#!/usr/bin/env python3
"""Run the benchmark: xmppd beside Prosody, same load, same run, one table.

    python bench/run.py                    # every scenario, 3 repeats each
    python bench/run.py -s messages-plain -r 5
    python bench/run.py --only xmppd --quick -s messages-plain   # the CI guard's run

For each scenario and repeat, each server is started fresh (new data
directory, same accounts), driven by the load generator in this process, and
stopped; repeats interleave the servers (A, B, B, A, A, B …) so drift in a
shared machine's speed falls on both. The table gives medians over repeats,
the ratio xmppd/Prosody against its target, and each server's min–max.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import math
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import scenarios  # noqa: E402
import mam_scenarios  # noqa: E402,F401 - registers the archive rows
import s2s_scenarios  # noqa: E402,F401 - registers the federation row
import servers  # noqa: E402

BOOKKEEPING = ("lost", "dup", "sent", "server CPU", "generator CPU")


def busy_cores(interval: float = 1.0) -> float:
    """How many cores the machine kept busy over ``interval`` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    total = total1 - total0
    return (1 - (idle1 - idle0) / total) * (os.cpu_count() or 1) if total else 0.0


def wait_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit`` seconds for the machine to be quiet (under
    ``threshold`` busy cores over a second): on a shared machine, another
    process's test run takes a core from whichever server runs then.
    Returns the busy cores last seen."""
    deadline = time.monotonic() + limit
    while True:
        busy = busy_cores()
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def run_once(scenario: scenarios.Scenario, name: str, workdir: Path, cert, quick: bool,
             profile: Path | None = None) -> dict:
    server = scenario.make_server(name, workdir, cert)
    scenario.start(server, quick)
    spies = []
    if profile is not None and name == "xmppd":
        # py-spy samples the running twistd (each of a pair's two);
        # collapsed stacks, one file per scenario and process.
        profile.mkdir(parents=True, exist_ok=True)
        # The venv's own py-spy when it has one (run without activating it).
        beside = Path(sys.executable).with_name("py-spy")
        for suffix, pid in server.pids().items():
            spies.append(subprocess.Popen(
                [str(beside) if beside.exists() else "py-spy", "record", "-p", str(pid),
                 "-r", "200", "-f", "raw", "-o", str(profile / f"{scenario.name}{suffix}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
    try:
        ctx = scenarios.Context(server, quick=quick, tls=scenario.tls)
        result = asyncio.run(scenario.run(ctx))
        result.update(ctx.measured)
        alive = server.alive()
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        server.stop()
    if not alive:
        raise RuntimeError(f"{name} died during {scenario.name}:\n{server.log_tail()}")
    return result


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: dict, chosen: list[scenarios.Scenario], names: list[str]) -> str:
    both = len(names) == 2
    header = ["scenario", "metric"] + [f"{n} median" for n in names]
    if both:
        header += ["ratio", "target", "met"]
    header += [f"{n} min–max" for n in names] + ["lost/dup", "CPU srv/gen (max)"]
    rows = [header]
    for sc in chosen:
        runs = results[sc.name]
        for i, metric in enumerate(sc.metrics):
            meds = [statistics.median(r[metric.key] for r in runs[n]) for n in names]
            row = [sc.name if i == 0 else "", metric.key] + [fmt(m) for m in meds]
            if both:
                # no ratio of a figure that can be zero or negative (growth)
                ratio = meds[0] / meds[1] if meds[0] > 0 and meds[1] > 0 else float("nan")
                row += [f"{ratio:.2f}×" if not math.isnan(ratio) else "-"]
                if metric.target is None:
                    row += ["-", "-"]
                else:
                    # a ratio target, or with ``absolute`` a bound on xmppd's own figure
                    judged = meds[0] if metric.absolute else ratio
                    ok = judged >= metric.target if metric.better == "higher" else judged <= metric.target
                    row += [("≥" if metric.better == "higher" else "≤") + f"{metric.target:.1f}"
                            + ("" if metric.absolute else "×"), "yes" if ok else "NO"]
            row += [f"{fmt(min(r[metric.key] for r in runs[n]))}–{fmt(max(r[metric.key] for r in runs[n]))}"
                    for n in names]
            if i == 0:
                lost = "/".join(f"{sum(r.get('lost', 0) for r in runs[n])}"
                                f"+{sum(r.get('dup', 0) for r in runs[n])}" for n in names)
                cpu = "/".join(f"{max(r.get('server CPU', 0) for r in runs[n]):.0%}"
                               f" {max(r.get('generator CPU', 0) for r in runs[n]):.0%}" for n in names)
            else:
                lost = cpu = ""
            rows.append(row + [lost, cpu])
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--scenario", action="append", choices=sorted(scenarios.SCENARIOS),
                        help="run only these (repeatable); default: all")
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(servers.SERVERS), help="run one server alone")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--extras", metavar="LIST",
                        help="replace the chosen scenarios' extra features (comma-separated "
                             f"names among {', '.join(servers.EXTRAS)}; '' for none)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long for the machine to be idle "
                             "(other processes using under 0.3 cores); the busy cores seen are "
                             "printed with the run")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample xmppd with py-spy during each run (collapsed stacks in DIR)")
    args = parser.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    loop_name = loadgen.install_fast_loop()
    names = [args.only] if args.only else ["xmppd", "prosody"]
    chosen = [scenarios.SCENARIOS[n] for n in (args.scenario or scenarios.SCENARIOS)]
    if args.extras is not None:
        extras = tuple(e for e in args.extras.split(",") if e)
        unknown = [e for e in extras if e not in servers.EXTRAS]
        if unknown:
            parser.error(f"unknown extras: {', '.join(unknown)}")
        chosen = [dataclasses.replace(sc, extras=extras) for sc in chosen]
    workdir = Path(tempfile.mkdtemp(prefix="xmppd-bench-"))
    workdir.chmod(0o755)  # Prosody runs as its own user
    cert = servers.make_certificate(workdir)
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{_cpus()} CPUs, Python {platform.python_version()}, generator on {loop_name}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", file=sys.stderr)
    print(f"# TLS: {servers.tls_libraries()}", file=sys.stderr)
    try:
        results: dict[str, dict[str, list[dict]]] = {}
        failures = 0
        for sc in chosen:
            results[sc.name] = {n: [] for n in names}
            for rep in range(args.repeats):
                order = names if rep % 2 == 0 else names[::-1]
                for name in order:
                    busy = wait_quiet(args.quiet_wait) if args.quiet_wait else None
                    r = run_once(sc, name, workdir, cert, args.quick, args.profile)
                    if busy is not None:
                        r["busy cores before"] = busy
                    results[sc.name][name].append(r)
                    failures += r.get("lost", 0) + r.get("dup", 0)
                    # CPU shares ("server CPU", "generator CPU", a pair's "A CPU"...) as %
                    shown = ", ".join(f"{k} {fmt(v) if not k.endswith(' CPU') else f'{v:.0%}'}"
                                      for k, v in r.items() if not isinstance(v, list))
                    print(f"  {sc.name} #{rep + 1} {name}: {shown}", file=sys.stderr, flush=True)
                    for k, v in r.items():
                        if isinstance(v, list):  # a series, such as RSS samples
                            print(f"    {k}: {' '.join(fmt(x) for x in v)}", file=sys.stderr, flush=True)
    finally:
        for sc in chosen:
            sc.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"Features in both servers: {servers.FEATURES}. Repeats: {args.repeats}"
          f"{' (quick sizes)' if args.quick else ''}. Ratio = xmppd / Prosody.")
    for sc in chosen:
        for extra in sc.extras:
            ours, theirs = servers.EXTRAS[extra]
            print(f"{sc.name} adds {extra}: xmppd {' '.join(ours)}, Prosody "
                  f"{' '.join('mod_' + m for m in theirs)}.")
    print()
    print(table(results, chosen, names))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if failures:
        print(f"\n{failures} stanzas lost or duplicated", file=sys.stderr)
        return 1
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
