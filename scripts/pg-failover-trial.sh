#!/usr/bin/env bash
# A PostgreSQL failover under a running fleet, tried by hand (docs/deployment.md, section 3):
# a primary and a streaming-replication standby (synchronous), two `sovereign serve` processes
# with every store in PostgreSQL through a two-host URL with `target_session_attrs=read-write`,
# writes going on through both; then the primary is stopped hard and the standby promoted.
# Prints what the load saw second by second, and runs `sovereign audit verify` at the end.
#
#   cargo build --release -p sovereign && scripts/pg-failover-trial.sh [WORKDIR]
#
# Needs PostgreSQL 15's server binaries (Debian: postgresql-15) and curl; run as root (the
# servers run as `postgres`) or as an ordinary user.
set -euo pipefail

BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
SOV=${SOVEREIGN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/sovereign}
WORK=${1:-$(mktemp -d /tmp/pg-failover.XXXXXX)}
P1=55431 P2=55432
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { printf '%s %s\n' "$(date +%T.%3N)" "$*"; }

mkdir -p "$WORK"; chmod 777 "$WORK"
cleanup() {
    kill "${GW[@]}" 2>/dev/null || true
    as_pg "$BIN/pg_ctl" -D "$WORK/primary" -m immediate stop >/dev/null 2>&1 || true
    as_pg "$BIN/pg_ctl" -D "$WORK/standby" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "primary on $P1"
as_pg "$BIN/initdb" -D "$WORK/primary" -U sovereign --auth=trust >/dev/null
cat >>"$WORK/primary/postgresql.conf" <<EOF
port = $P1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
max_wal_senders = 4
EOF
echo "host replication sovereign 127.0.0.1/32 trust" >>"$WORK/primary/pg_hba.conf"
as_pg "$BIN/pg_ctl" -D "$WORK/primary" -l "$WORK/primary.log" -w start >/dev/null
for db in log us_east sg_legacy custody data_keys; do
    as_pg "$BIN/createdb" -h 127.0.0.1 -p $P1 -U sovereign "$db"
done

log "standby on $P2 (streaming, synchronous)"
as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p $P1 -U sovereign -D "$WORK/standby" -R -X stream -c fast \
    -d "application_name=standby"
sed -i "s/^port = $P1/port = $P2/" "$WORK/standby/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$WORK/standby" -l "$WORK/standby.log" -w start >/dev/null
# Synchronous once the standby is there (before, every commit would wait for it).
echo "synchronous_standby_names = 'standby'" >>"$WORK/primary/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$WORK/primary" reload >/dev/null

# Escaped for sed's replacement (`&` there means the match).
url() { echo "postgres://sovereign@127.0.0.1:$P1,127.0.0.1:$P2/$1?target_session_attrs=read-write\&sslmode=disable"; }
DATA="$WORK/data"
"$SOV" init --data "$DATA" >/dev/null
sed -i \
    -e "s|store = \"sqlite:log/log.sqlite\"|store = \"$(url log)\"|" \
    -e "s|store = \"sqlite:sites/us-east/store.sqlite\"|store = \"$(url us_east)\"|" \
    -e "s|store = \"sqlite:sites/sg-legacy/store.sqlite\"|store = \"$(url sg_legacy)\"|" \
    -e "s|store = \"custody/custody.sqlite\"|store = \"$(url custody)\"|" \
    -e "s|store = \"custody/data-keys.sqlite\"|store = \"$(url data_keys)\"|" \
    "$DATA/sovereign.toml"

GW=()
for port in 18181 18182; do
    "$SOV" serve --data "$DATA" --listen 127.0.0.1:$port 2>"$WORK/gw-$port.log" &
    GW+=($!)
    until curl -sf http://127.0.0.1:$port/healthz >/dev/null; do
        kill -0 "${GW[-1]}" 2>/dev/null || { cat "$WORK/gw-$port.log"; exit 1; }
        sleep 0.2
    done
done
log "two gateways serving"

TOKEN=$("$SOV" token --data "$DATA" --sub svc-writer --entity usds --location US \
    --clearance us-data --role service)
curl -sf -X PUT http://127.0.0.1:18181/v1/subjects/failover -H "Authorization: Bearer $TOKEN" \
    -d '{"jurisdiction":"US"}' >/dev/null

# Writes through both gateways, one a time each, every answer recorded with its time.
load() {
    local port=$1 i=0
    while [ ! -e "$WORK/stop" ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
            "http://127.0.0.1:$port/v1/subjects/failover/records/profile/p$port-$i" \
            -H "Authorization: Bearer $TOKEN" -H "Sovereign-Purpose: failover trial" \
            -d "{\"display_name\":\"n$i\"}")
        echo "$(date +%s) $port $i $code" >>"$WORK/answers"
        i=$((i + 1))
    done
}
load 18181 & L1=$!
load 18182 & L2=$!
sleep 5
log "stopping the primary (immediate), promoting the standby"
as_pg "$BIN/pg_ctl" -D "$WORK/primary" -m immediate stop >/dev/null
sleep 1
as_pg "$BIN/pg_ctl" -D "$WORK/standby" -w promote >/dev/null
log "standby promoted"
sleep 10
touch "$WORK/stop"; wait $L1 $L2

echo "answers per second (time: status count ...):"
awk '{c[$1" "$4]++; t[$1]=1} END {for (k in c) print k, c[k]}' "$WORK/answers" | sort |
    awk '{a[$1]=a[$1]" "$2"x"$3} END {for (s in a) print s":"a[s]}' | sort
echo "acknowledged writes: $(awk '$4==200' "$WORK/answers" | wc -l)"
# Every acknowledged write must read back through the promoted primary.
lost=0
while read -r _ port i code; do
    [ "$code" = 200 ] || continue
    got=$(curl -s -o /dev/null -w '%{http_code}' \
        "http://127.0.0.1:18182/v1/subjects/failover/records/profile/p$port-$i" \
        -H "Authorization: Bearer $TOKEN" -H "Sovereign-Purpose: failover check")
    [ "$got" = 200 ] || { lost=$((lost + 1)); echo "lost: p$port-$i ($got)"; }
done <"$WORK/answers"
echo "acknowledged writes not readable after the failover: $lost"
KEY=$(curl -sf http://127.0.0.1:18182/log/key)
"$SOV" audit verify --url http://127.0.0.1:18182/log --key "$KEY" && echo "audit verify: accepted"
echo "gateway logs: $WORK/gw-*.log"
