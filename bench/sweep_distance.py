"""The gain and the recommended pool at loopback and at 1 ms of round trip, side by side
(issue 19's last "done when" item). Runs the real commands, each in a temporary folder,
and reads the JSON they write (results.json, sweep.json):

- ``poolbench run --strategies psycopg:none,psycopg:pool`` at loopback and with ``--rtt 1``:
  per strategy the throughput and mean latency, the no-pool/pool gain, a new connection's
  cost and round trips, and the round trip the relay's check measured;
- ``poolbench sweep --rtt 0,1 --strategies psycopg:pool`` over pool sizes 1-32 at 64
  clients: per RTT the recommended size, its 95% interval and its reason.

Then a table, loopback | 1 ms, for docs/network.md. About 7 minutes on 2 cores.
Run: python bench/sweep_distance.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Report

RTT_MS = 1.0
RUN = ["run", "--strategies", "psycopg:none,psycopg:pool", "-w", "8", "--pool-max", "8",
       "--rows", "500", "--trials", "3", "--warmup", "1", "--no-chart"]
SWEEP = ["sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,2,4,8,16,32",
         "--workers", "64", "--rtt", f"0,{RTT_MS:g}", "--no-chart"]
# A new connection, up to ReadyForQuery: the probe's slices (its first query is an operation's).
CONNECT_SLICES = ("tcp", "tls", "auth_exchange", "scram_key_derivation", "backend_start")

Json = dict[str, Any]


def poolbench(args: list[str], out: str, report: Report) -> tuple[Json, float]:
    """One command in a fresh folder; its JSON output and the seconds it took."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "poolbench", *args, "--out", "out"],
                              cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        path = Path(tmp, "out", out)
        if proc.returncode != 0 or not path.exists():
            report.line(f"poolbench {' '.join(args)}: exit {proc.returncode}, no {out}")
            for line in (proc.stderr or proc.stdout).strip().splitlines()[-5:]:
                report.line(f"  {line}")
            report.save()
            raise SystemExit(1)
        return json.loads(path.read_text()), seconds


def operation(strategy: Json) -> dict[str, float]:
    """Over the strategy's phases: throughput (operations over the phases' median seconds),
    and the mean latency and acquire (pool wait, or the connect without a pool), ops-weighted."""
    phases = strategy["phases"]
    ops = sum(p["ops"] for p in phases)
    seconds = sum(p["median_s"] for p in phases)

    def mean_ms(kind: str) -> float:
        return sum(p[kind]["mean_us"] * p["ops"] for p in phases) / ops / 1000

    return {"throughput": sum(p["throughput_ops_s"] * p["median_s"] for p in phases) / seconds,
            "latency_ms": mean_ms("latency"), "acquire_ms": mean_ms("acquire")}


def run_facts(results: Json) -> Json:
    by_name = {s["name"]: operation(s) for s in results["strategies"]}
    none, pool = by_name["psycopg:none"], by_name["psycopg:pool"]
    cost = next(c for c in results["connect_cost"] if c["route"] == "direct")
    probe_ms = (sum(cost["slices"][s]["mean_us"] for s in CONNECT_SLICES if s in cost["slices"])
                / 1000 if cost["slices"] else None)
    projected = next(d for d in results["distances"] if d["strategy"] == "psycopg:none")
    line = next(d for d in results["comparison"]["drivers"] if d["driver"] == "psycopg")
    return {"none": none, "pool": pool, "probe_ms": probe_ms,
            "probe_samples": cost["samples"], "probe_round_trips": cost["round_trips"],
            "connect_round_trips": projected["connect_round_trips"],
            "connect_round_trips_from": projected["connect_round_trips_from"],
            "gain_op_pct": (none["latency_ms"] - pool["latency_ms"]) / none["latency_ms"] * 100,
            "work": line, "rtt": results.get("rtt")}


def report_run(report: Report, label: str, seconds: float, f: Json) -> None:
    report.line(f"run {label}: {seconds:.0f} s")
    if f["rtt"] is not None:
        r = f["rtt"]
        report.line(f"  relay check: asked {r['asked_ms']:g} ms, measured "
                    f"{r['measured_ms']:.3f} ms (loopback base {r['base_ms']:.3f} ms, "
                    f"{r['concurrency']} connections, "
                    f"{r['round_trips']} round trips): error {r['error_ms']:+.3f} ms, tolerance "
                    f"{r['tolerance_ms']:.3f} ms, {'ok' if r['ok'] else 'BEYOND TOLERANCE'}")
    for name in ("none", "pool"):
        o = f[name]
        report.line(f"  psycopg:{name:<5} {o['throughput']:8.0f} ops/s, mean latency "
                    f"{o['latency_ms']:7.3f} ms (acquire {o['acquire_ms']:.3f} ms)")
    w = f["work"]
    report.line(f"  gain per operation (mean latency): {f['gain_op_pct']:.1f}%; time for the work "
                f"(sums of phase medians): {w['no_pool_s']:.3f} s vs {w['pooled_s']:.3f} s = "
                f"{w['gain_pct']:.1f}%")
    trips = ", ".join(f"{k} {v}" for k, v in f["probe_round_trips"].items() if v)
    probe = f"{f['probe_ms']:.2f} ms" if f["probe_ms"] is not None else "not measured"
    report.line(f"  new connection: psycopg:none's connect {f['none']['acquire_ms']:.2f} ms "
                f"(mean, 8 workers); the probe alone {probe} up to ReadyForQuery "
                f"({f['probe_samples']} samples; round trips per slice: {trips}); "
                f"{f['connect_round_trips']} round trips ({f['connect_round_trips_from']})")


def sweep_facts(sweep: Json) -> dict[float, Json]:
    found: dict[float, Json] = {}
    for rec in sweep["recommendations"]:
        rtt = rec["rtt_ms"]
        points = sorted((p for p in sweep["points"] if p["rtt_ms"] == rtt
                         and p["strategy"] == rec["strategy"]), key=lambda p: p["pool_size"])
        chosen = next(p for p in points if p["pool_size"] == rec["pool_size"])
        held = (chosen["latency"]["mean_us"] - chosen["acquire"]["mean_us"]) / 1000
        measured = [p["rtt_measured_ms"] for p in points if p["rtt_measured_ms"] is not None]
        found[rtt] = {"rec": rec, "points": points, "held_ms": held,
                      "busy": chosen["throughput_ops_s"] * held / 1000,
                      "rtt_measured_ms": statistics.median(measured) if measured else None}
    return found


def report_sweep(report: Report, seconds: float, found: dict[float, Json]) -> None:
    report.line(f"sweep: {seconds:.0f} s")
    for rtt, f in sorted(found.items()):
        rec = f["rec"]
        at = f"{rtt:g} ms RTT"
        if f["rtt_measured_ms"]:
            at += f" (relay check, median of the points: {f['rtt_measured_ms']:.3f} ms)"
        report.line(f"  at {at}:")
        for p in f["points"]:
            i = p["throughput_interval"]
            span = (f" [{i['low']:.0f}-{i['high']:.0f}]" if i["low"] is not None else "")
            measured = (f", relay {p['rtt_measured_ms']:.3f} ms"
                        if p["rtt_measured_ms"] is not None else "")
            report.line(f"    pool {p['pool_size']:>2}: {p['throughput_ops_s']:7.0f} ops/s{span}, "
                        f"p99 {p['latency']['p99_us'] / 1000:.1f} ms{measured}")
        report.line(f"    recommended {rec['reason']}")  # the reason opens with size and interval


def side_by_side(report: Report, here: Json, far: Json, sweep: dict[float, Json]) -> None:
    def interval(s: Json) -> str:
        i = s["rec"]["interval"]
        return f"{i['low']}-{i['high']}" if i["low"] is not None else "no interval"

    def both(fmt: str, a: Any, b: Any) -> str:
        return f" {fmt.format(a)} | {fmt.format(b)} |"

    r = far["rtt"]
    s0, s1 = sweep[0.0], sweep[RTT_MS]
    rows = [
        (f"round trip, SELECT 1 (relay check, {r['concurrency']} connections)",
         f" {r['base_ms']:.3f} ms | {r['measured_ms']:.3f} ms (asked {r['asked_ms']:g} + base) |"),
        ("new connection, psycopg:none's connect (mean, 8 workers)",
         both("{:.2f} ms", here["none"]["acquire_ms"], far["none"]["acquire_ms"])),
        ("new connection alone, to ReadyForQuery (probe)",
         f" {here['probe_ms']:.2f} ms, {here['connect_round_trips']} round trips |"
         f" {far['probe_ms']:.2f} ms, {far['connect_round_trips']} round trips |"),
        ("operation, psycopg:none (mean)", both("{:.2f} ms", here["none"]["latency_ms"],
                                                far["none"]["latency_ms"])),
        ("operation, psycopg:pool (mean)", both("{:.2f} ms", here["pool"]["latency_ms"],
                                                far["pool"]["latency_ms"])),
        ("throughput, psycopg:none / psycopg:pool",
         f" {here['none']['throughput']:,.0f} / {here['pool']['throughput']:,.0f} ops/s |"
         f" {far['none']['throughput']:,.0f} / {far['pool']['throughput']:,.0f} ops/s |"),
        ("gain per operation (mean latency)", both("{:.1f}%", here["gain_op_pct"],
                                                   far["gain_op_pct"])),
        ("gain, time for the work (sums of phase medians)",
         both("{:.1f}%", here["work"]["gain_pct"], far["work"]["gain_pct"])),
        ("recommended pool at 64 clients (95% interval)",
         "".join(f" {s['rec']['pool_size']} ({interval(s)}) |" for s in (s0, s1))),
        ("there: connection held per operation; busy (Little's law)",
         "".join(f" {s['held_ms']:.2f} ms; {s['busy']:.1f} |" for s in (s0, s1))),
        ("sweep's round trip (relay check, median of points)",
         f" - | {s1['rtt_measured_ms']:.3f} ms |" if s1["rtt_measured_ms"] else " - | - |"),
    ]
    report.line("")
    report.line(f"| psycopg, this machine | loopback | {RTT_MS:g} ms RTT |")
    report.line("|---|---|---|")
    for label, cells in rows:
        report.line(f"| {label} |{cells}")


def main() -> None:
    report = Report("sweep_distance")
    report.line(f"# run: poolbench {' '.join(RUN)} [--rtt {RTT_MS:g}]")
    report.line(f"# sweep: poolbench {' '.join(SWEEP)}")
    report.line("# each command in a temporary folder, with an embedded server of its own; "
                "figures read from the results.json and sweep.json they write")
    found = {}
    for label, extra in (("at loopback", []), (f"at --rtt {RTT_MS:g}", ["--rtt", f"{RTT_MS:g}"])):
        results, seconds = poolbench(RUN + extra, "results.json", report)
        found[label] = run_facts(results)
        report_run(report, label, seconds, found[label])
    sweep, seconds = poolbench(SWEEP, "sweep.json", report)
    by_rtt = sweep_facts(sweep)
    report_sweep(report, seconds, by_rtt)
    side_by_side(report, found["at loopback"], found[f"at --rtt {RTT_MS:g}"], by_rtt)
    report.save()


if __name__ == "__main__":
    main()
