#!/usr/bin/env python3
"""Turns bench/run's raw measurements into the comparison table (Markdown, on stdout) and
bench/results/latest.json. Ratios are computed per repetition (same run, same pinning), then
summarised as median and min-max."""
import json
import math
import statistics
import sys
from collections import defaultdict

raw, out_json, machine, versions, command, reps, duration, idle, tls_idle = sys.argv[1:10]
values = defaultdict(dict)  # (scenario, metric) -> proxy -> {rep: value}
for line in open(raw):
    scenario, metric, proxy, rep, value = line.rstrip("\n").split("\t")
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    values[(scenario, metric)].setdefault(proxy, {})[int(rep)] = v

# (scenario, metric, label, higher_is_better, goal text, goal check on the HAProxy/nginx ratios)
ROWS = [
    ("S1", "rps", "HTTP keep-alive, 100 conns: requests/s", True, "≥ 1.15 × HAProxy and nginx",
     lambda h, n: h >= 1.15 and n >= 1.15),
    ("S1", "cpu_us_per_req", "HTTP: proxy CPU µs/request", False, "≤ 0.8 × HAProxy", lambda h, n: h <= 0.8),
    ("S1R", "rps", "HTTP through a 50-route table (the last route matches): requests/s", True,
     "ahead of HAProxy and nginx with the same table", lambda h, n: h >= 1.0 and n >= 1.0),
    ("S1R", "cpu_us_per_req", "50-route table: proxy CPU µs/request", False, "(reported)", None),
    ("S2", "added_p50_us", "added latency p50, 1 conn (µs)", False, "≤ 0.8 × HAProxy", lambda h, n: h <= 0.8),
    ("S2", "added_p99_us", "added latency p99, 1 conn (µs)", False, "≤ 0.8 × HAProxy", lambda h, n: h <= 0.8),
    ("S3", "p99_us", "fixed rate (70 % of slowest): p99 (µs)", False, "≤ 0.8 × HAProxy", lambda h, n: h <= 0.8),
    ("S3", "p999_us", "fixed rate: p99.9 (µs)", False, "≤ 0.8 × HAProxy", lambda h, n: h <= 0.8),
    ("S5", "conns_per_s", "new connection per request: conns/s", True, "≥ 1.0 × HAProxy", lambda h, n: h >= 1.0),
    ("S7", "l4_rps", "L4 small req/resp: requests/s", True, "≥ 1.1 × HAProxy", lambda h, n: h >= 1.1),
    ("S7", "l4_cpu_us_per_req", "L4: proxy CPU µs/request", False, "(reported)", None),
    ("S8", "mib_per_s", "L4 bulk 1 MiB responses: MiB/s", True, "≥ 1.0 × HAProxy", lambda h, n: h >= 1.0),
    ("S8", "cpu_s_per_gib", "L4 bulk: CPU s per GiB", False, "(reported)", None),
    ("S11", "rps", "HTTPS keep-alive, 100 conns: requests/s", True, "≥ 1.1 × HAProxy and nginx",
     lambda h, n: h >= 1.1 and n >= 1.1),
    ("S11", "cpu_us_per_req", "HTTPS: proxy CPU µs/request", False, "≤ 0.9 × HAProxy", lambda h, n: h <= 0.9),
    ("S12", "handshakes_per_s", "full TLS handshake per connection: handshakes/s", True,
     "≥ 1.0 × HAProxy and nginx", lambda h, n: h >= 1.0 and n >= 1.0),
    ("S12", "cpu_us_per_handshake", "TLS handshake: proxy CPU µs each", False, "(reported)", None),
    ("S13", "h2c_rps", "h2c (prior knowledge) → HTTP/1.1, 16 conns × 32 streams: requests/s", True,
     "≥ 1.2 × HAProxy, ≥ 1.5 × nginx", lambda h, n: h >= 1.2 and n >= 1.5),
    ("S13", "h2c_cpu_us_per_req", "h2c: proxy CPU µs/request", False, "(reported)", None),
    ("S13", "h2tls_rps", "h2 over TLS → HTTP/1.1, 16 conns × 32 streams: requests/s", True,
     "≥ 1.2 × HAProxy, ≥ 1.5 × nginx", lambda h, n: h >= 1.2 and n >= 1.5),
    ("S13", "h2tls_cpu_us_per_req", "h2 over TLS: proxy CPU µs/request", False, "(reported)", None),
    ("S14", "grpc_rps", "gRPC unary, h2 both sides, 16 conns × 32 streams: calls/s", True,
     "≥ 1.0 × nginx grpc_pass and HAProxy", lambda h, n: h >= 1.0 and n >= 1.0),
    ("S14", "grpc_cpu_us_per_req", "gRPC: proxy CPU µs/call", False, "(reported)", None),
    ("S10", "kib_per_idle_conn", f"memory per idle client conn (KiB, {idle} conns)", False,
     "≤ 16 KiB and ≤ HAProxy", None),
    ("S10TLS", "kib_per_idle_conn", f"memory per idle TLS client conn (KiB, {tls_idle} conns)", False,
     "≤ HAProxy", lambda h, n: h <= 1.0),
]


def median(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def ratios(metric_values, peer):
    f, o = metric_values.get("fulcrum", {}), metric_values.get(peer, {})
    rs = []
    for rep, v in f.items():
        if rep in o and o[rep] not in (0, math.nan) and not math.isnan(o[rep]) and not math.isnan(v):
            rs.append(v / o[rep])
    return rs


def fmt(x, digits=1):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def fmt_ratio(rs):
    if not rs:
        return "–", math.nan
    m = statistics.median(rs)
    if len(rs) == 1:
        return f"{m:.2f}", m
    return f"{m:.2f} ({min(rs):.2f}–{max(rs):.2f})", m


table = []
result_rows = []
print(f"Machine: {machine}  \nVersions: {versions}  \nCommand: `{command}` ({reps} repetition(s) × {duration} s)\n")
print("| scenario | metric | fulcrum | HAProxy | nginx | fulcrum ÷ HAProxy | fulcrum ÷ nginx | goal | met |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
for scenario, metric, label, higher, goal, check in ROWS:
    mv = values.get((scenario, metric), {})
    med = {p: median(list(mv.get(p, {}).values())) for p in ("fulcrum", "haproxy", "nginx")}
    rh, rn = ratios(mv, "haproxy"), ratios(mv, "nginx")
    th, mh = fmt_ratio(rh)
    tn, mn = fmt_ratio(rn)
    if check is not None and not math.isnan(mh):
        met = "yes" if check(mh, mn if not math.isnan(mn) else mh) else "no"
    elif metric == "kib_per_idle_conn" and not math.isnan(mh):
        met = "yes" if med["fulcrum"] <= 16 and mh <= 1.0 else "no"
    else:
        met = ""
    print(f"| {scenario} | {label} | {fmt(med['fulcrum'])} | {fmt(med['haproxy'])} | {fmt(med['nginx'])} | {th} | {tn} | {goal} | {met} |")
    result_rows.append({
        "scenario": scenario, "metric": metric, "label": label, "higher_is_better": higher,
        "median": med, "per_repetition": {p: [mv.get(p, {}).get(r) for r in sorted(mv.get(p, {}))] for p in mv},
        "ratio_vs_haproxy": {"median": mh, "all": rh}, "ratio_vs_nginx": {"median": mn, "all": rn},
        "goal": goal, "met": met,
    })

# The L7 tax: fulcrum's L7 p50 minus its L4 p50 over one connection.
l7 = values.get(("S2", "l7_p50_us"), {}).get("fulcrum", {})
l4 = values.get(("S7", "l4_p50_us"), {}).get("fulcrum", {})
tax = [l7[r] - l4[r] for r in l7 if r in l4]
if tax:
    t = statistics.median(tax)
    print(f"| S7 | fulcrum L7 tax: L7 p50 − L4 p50 (µs) | {t:.1f} | | | | | ≤ 10 µs | {'yes' if t <= 10 else 'no'} |")
    result_rows.append({"scenario": "S7", "metric": "l7_tax_p50_us", "median": {"fulcrum": t},
                        "per_repetition": {"fulcrum": tax}, "goal": "≤ 10 µs", "met": "yes" if t <= 10 else "no"})
# The cost of counting for /metrics: fulcrum's S1 with metrics on over the same with them off.
for metric, label in (("rps", "requests/s"), ("cpu_us_per_req", "proxy CPU µs/request")):
    off = values.get(("S1M", f"{metric}_off"), {}).get("fulcrum", {})
    on = values.get(("S1M", f"{metric}_on"), {}).get("fulcrum", {})
    costs = [(off[r] / on[r] - 1) * 100 if metric == "rps" else (on[r] / off[r] - 1) * 100
             for r in off if r in on and on[r] and off[r]]
    if not costs:
        continue
    c = statistics.median(costs)
    met = "yes" if c <= 3 else "no"
    print(f"| S1M | metrics and access logs off → metrics on: {label} | {fmt(median(list(on.values())))} "
          f"(off: {fmt(median(list(off.values())))}) | | | | | cost ≤ 3 % (measured {c:+.1f} %) | {met} |")
    result_rows.append({"scenario": "S1M", "metric": f"metrics_cost_{metric}_percent",
                        "median": {"fulcrum": c}, "per_repetition": {"fulcrum": costs},
                        "on": on, "off": off, "goal": "≤ 3 %", "met": met})
# What the 50-route table costs fulcrum: its S1R over its plain S1, in the same repetition.
plain = values.get(("S1", "rps"), {}).get("fulcrum", {})
routed = values.get(("S1R", "rps"), {}).get("fulcrum", {})
costs = [(1 - routed[r] / plain[r]) * 100 for r in routed if r in plain and plain[r]]
if costs:
    c = statistics.median(costs)
    met = "yes" if c <= 3 else "no"
    print(f"| S1R | fulcrum: S1 → S1 through 50 routes: requests/s | {fmt(median(list(routed.values())))} "
          f"(plain: {fmt(median(list(plain.values())))}) | | | | | cost ≤ 3 % (measured {c:+.1f} %) | {met} |")
    result_rows.append({"scenario": "S1R", "metric": "route_table_cost_percent", "median": {"fulcrum": c},
                        "per_repetition": {"fulcrum": costs}, "goal": "≤ 3 %", "met": met})
rate = values.get(("S3", "rate_rps"), {}).get("fulcrum", {})
if rate:
    print(f"\nS3 offered rate: {', '.join(f'{v:,.0f}' for v in rate.values())} requests/s.")

json.dump({"machine": machine, "versions": versions, "command": command, "repetitions": int(reps),
           "duration_s": float(duration), "idle_connections": int(idle), "tls_idle_connections": int(tls_idle), "results": result_rows},
          open(out_json, "w"), indent=2, default=lambda x: None)
