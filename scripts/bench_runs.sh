#!/bin/bash
# Runs of the example ranker under load, next to the HTTP floor and a governed read of the
# same record, one gateway, one run (release build).
set -euo pipefail
# Run from the repository root after `cargo build --release`.
SOV=$PWD/target/release/sovereign
R=$PWD/examples/algorithms/ranker
D=$(mktemp -d)
$SOV init --data $D/data >/dev/null
SOVEREIGN_LOG=warn $SOV serve --listen 127.0.0.1:18181 --data $D/data 2>$D/serve.log &
PID=$!
trap "kill $PID; rm -rf $D" EXIT
GW=http://127.0.0.1:18181
for i in $(seq 50); do curl -sf $GW/healthz >/dev/null && break; sleep 0.2; done
tok() { $SOV token --data $D/data "$@"; }
FRANK=$(tok --sub frank --entity usds --location US --clearance us-data --role break-glass)
OLGA=$(tok --sub olga --entity custodian --location US --role custodian-operator)
PAT=$(tok --sub pat --entity parent --location SG --role algorithm-author)
RUNNER=$(tok --sub recommender --entity parent --location SG --role algorithm-runner)
curl -sf -X POST $GW/v1/access/break-glass -H "Authorization: Bearer $FRANK" -H 'Sovereign-Purpose: setup' \
  -d '{"action":"write","collections":["activity"],"purpose":"bench","reason_code":"security-audit"}' >/dev/null
curl -sf -X POST $GW/v1/access/break-glass -H "Authorization: Bearer $FRANK" -H 'Sovereign-Purpose: setup' \
  -d '{"action":"read","collections":["activity"],"purpose":"bench","reason_code":"security-audit"}' >/dev/null
python3 - "$GW" "$FRANK" <<'PY'
import sys, requests
gw, tok = sys.argv[1], sys.argv[2]
s = requests.Session(); h = {"Authorization": "Bearer " + tok, "Sovereign-Purpose": "setup"}
for i in range(1000):
    s.put(f"{gw}/v1/subjects/u-{i}", headers=h, json={"jurisdiction": "US"}).raise_for_status()
    s.put(f"{gw}/v1/subjects/u-{i}/records/activity/main", headers=h,
          json={"watch_history": [f"drama:t{i}a", f"drama:t{i}b", f"comedy:t{i}c"], "public_video_count": i}).raise_for_status()
PY

cd $D
SOVEREIGN_URL=$GW $SOV algo submit $R/ranker.wasm --manifest $R/manifest.json --name ranker --version 1.0.0 --token $PAT >/dev/null
$SOV algo sign $R/ranker.wasm --manifest $R/manifest.json --name ranker --version 1.0.0 --key $D/data/keys/custodian.key --out $D/r.sig >/dev/null
SOVEREIGN_URL=$GW $SOV algo activate --name ranker --version 1.0.0 --signature $D/r.sig --token $OLGA >/dev/null
cat > $D/run.lua <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $RUNNER"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format('{"subject":"u-%d"}', counter % 1000))
end
LUA
cat > $D/read.lua <<LUA
wrk.headers["Authorization"] = "Bearer $FRANK"
wrk.headers["Sovereign-Purpose"] = "bench"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, string.format("/v1/subjects/u-%d/records/activity/main", counter % 1000))
end
LUA
echo "== GET /healthz (floor)"; wrk -t2 -c64 -d10s --latency $GW/healthz | grep -E "Requests/sec|50%|99%"
echo "== governed read of the activity record (break-glass grant, protected fields)"; wrk -t2 -c64 -d10s --latency -s $D/read.lua $GW | grep -E "Requests/sec|50%|99%|Non-2xx"
echo "== POST /v1/algorithms/ranker/runs"; wrk -t2 -c64 -d10s --latency -s $D/run.lua $GW/v1/algorithms/ranker/runs | grep -E "Requests/sec|50%|99%|Non-2xx"
printf 'u-%s\n' $(seq 0 999) > $D/subjects.txt
echo "== algo batch, 1000 subjects, one connection, --store"
/usr/bin/time -f "%e s" env SOVEREIGN_URL=$GW $SOV algo batch --name ranker --subjects $D/subjects.txt --state $D/c --store recommendations --rate 100000 --token $RUNNER
SOVEREIGN_URL=$GW $SOV audit replay --url $GW/log --key "$(curl -s $GW/log/key)" | grep -E "audit replay|runs:|mismatches"
