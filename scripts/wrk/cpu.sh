#!/bin/bash
# usage: cpu.sh PID PORT SCRIPT|-   (TOKEN in the environment; "-" measures GET /healthz)
# Runs wrk -t2 -c64 for DUR seconds (default 8) and prints requests/s, p50, p99 and the
# server's CPU time per request.
set -euo pipefail
PID=$1; PORT=$2; SCRIPT=$3; DUR=${DUR:-8}
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
t0=$(cpu)
if [ "$SCRIPT" = "-" ]; then
    out=$(wrk -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$PORT/healthz")
else
    out=$(wrk -t2 -c64 -d"${DUR}s" --latency -s "$SCRIPT" "http://127.0.0.1:$PORT")
fi
t1=$(cpu)
requests=$(echo "$out" | awk '/requests in/ {print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
errors=$(echo "$out" | grep -E "Non-2xx|Socket errors" || true)
per=$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / $requests, 1))")
echo "$SCRIPT ${NEWPURPOSE:+(new purpose each)} rps=$rps p50=$p50 p99=$p99 server_cpu_us_per_request=$per $errors"
