#!/bin/bash
# usage: setup.sh BIN DATA PORT
# A fresh data folder DATA (removed first), `sovereign serve` on 127.0.0.1:PORT (its pid in
# DATA.pid, its log in DATA.serve.log), a vetted US staff token in DATA.token, and 1,000 US
# subjects bench-0 … bench-999, each with a profile record.
set -euo pipefail
BIN=$1; DATA=$2; PORT=$3
rm -rf "$DATA"
"$BIN" init --data "$DATA" >/dev/null
"$BIN" serve --data "$DATA" --listen "127.0.0.1:$PORT" > "$DATA.serve.log" 2>&1 &
echo $! > "$DATA.pid"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
TOKEN=$("$BIN" token --data "$DATA" --sub bench-reader --entity usds --location US \
    --clearance us-data --role service --ttl 24h)
echo "$TOKEN" > "$DATA.token"
python3 - "$PORT" "$TOKEN" <<'PY'
import sys, http.client, json
port, token = sys.argv[1], sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", int(port))
h = {"Authorization": "Bearer " + token, "Sovereign-Purpose": "benchmark"}
for i in range(1000):
    c.request("PUT", f"/v1/subjects/bench-{i}", body='{"jurisdiction":"US"}', headers=h)
    r = c.getresponse(); r.read(); assert r.status in (200, 201), r.status
    body = json.dumps({"email": f"user{i}@example.com", "phone": "+1 555 0100", "display_name": f"User {i}"})
    c.request("PUT", f"/v1/subjects/bench-{i}/records/profile/main", body=body, headers=h)
    r = c.getresponse(); b = r.read(); assert r.status in (200, 201), (r.status, b)
PY
