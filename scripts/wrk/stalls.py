#!/usr/bin/env python3
"""usage: stalls.py SERVE_LOG [ROUTE_PART]

Reads the request lines a `sovereign serve` logs at INFO (`request method=... route=...
micros=N`) and prints the server's own p50, p99 and p99.9 for the requests whose route
contains ROUTE_PART (default "records"), and how many stalls there were: runs of at least
48 requests over 10 ms, each started within 5 ms of the one before, that is, moments when
nearly all of wrk's 64 connections waited on the same thing (BENCHMARKS.md: a slow fsync of
the log). A long slow spell counts as one stall. Times are read as times of day: a log that
crosses midnight is not handled.
"""
import re
import sys

path = sys.argv[1]
route_part = sys.argv[2] if len(sys.argv) > 2 else "records"
requests = []  # (start, took in µs)
for line in open(path):
    if " request " not in line or route_part not in line:
        continue
    took = re.search(r"micros=(\d+)", line)
    clock = re.search(r"T(\d+):(\d+):([\d.]+)Z", line)
    if not took or not clock:
        continue
    end = int(clock[1]) * 3600 + int(clock[2]) * 60 + float(clock[3])
    requests.append((end - int(took[1]) / 1e6, int(took[1])))
if not requests:
    sys.exit("no request lines matched")
requests.sort()
times = sorted(took for _, took in requests)
span = requests[-1][0] - requests[0][0] or 1.0


def quantile(q):
    return times[min(len(times) - 1, int(len(times) * q))] / 1000


groups = []
for start, took in requests:
    if took <= 10_000:
        continue
    if groups and start - groups[-1][-1] < 0.005:
        groups[-1].append(start)
    else:
        groups.append([start])
stalls = sum(1 for g in groups if len(g) >= 48)
print(
    f"{len(times)} requests over {span:.1f} s: p50 {quantile(0.5):.2f} ms, "
    f"p99 {quantile(0.99):.2f} ms, p99.9 {quantile(0.999):.2f} ms; "
    f"stalls {stalls} ({stalls / span:.2f}/s)"
)
