#!/usr/bin/env bash
# Smoke test of a running Fleet server (seed 000's playbooks/smoke.sh): health, readiness, sign-in, one
# simulated tracker session end to end (handshake, records, ACKs, stored, served by the API), one sync cycle
# against a local reference agent (pulled, written, visible), and the metrics. Stops at the first failure with
# a readable report and a non-zero exit code (the number of the failed step).
#
# Run it on the server's host, with the server's environment (it uses the `fleet` CLI like an operator):
#   make smoke-test            or   bash playbooks/smoke.sh
# Settings (environment):
#   API_URL          the API (default http://127.0.0.1:$API_PORT, API_PORT default 8080)
#   DEVICE_HOST      where trackers connect (default 127.0.0.1), DEVICE_PORT (default $SERVER_PORT or 5221)
#   SMOKE_EMAIL, SMOKE_PASSWORD   a superuser (default: the first lines of $DATA_DIR/initial_admin.txt)
#   SMOKE_IMEI       the simulated tracker's IMEI (default 860000000999001); registered to a vehicle named
#                    "$SMOKE_NAME tracker" on first run, reused afterwards
#   SMOKE_NAME       prefix of the smoke vehicles' names (default "smoke test")
#   SMOKE_AGENT_PORT port of the local reference agent (default 18001); its vehicle "$SMOKE_NAME agent" points
#                    at 127.0.0.1:$SMOKE_AGENT_PORT and is reused while the port stays the same
#   FLEET            the fleet command (default: .venv/bin/fleet when present, else fleet)
set -u

API_URL="${API_URL:-http://127.0.0.1:${API_PORT:-8080}}"
DEVICE_HOST="${DEVICE_HOST:-127.0.0.1}"
DEVICE_PORT="${DEVICE_PORT:-${SERVER_PORT:-5221}}"
SMOKE_IMEI="${SMOKE_IMEI:-860000000999001}"
SMOKE_NAME="${SMOKE_NAME:-smoke test}"
SMOKE_AGENT_PORT="${SMOKE_AGENT_PORT:-18001}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${FLEET:-}" ]; then
    if [ -x "$HERE/.venv/bin/fleet" ]; then FLEET="$HERE/.venv/bin/fleet"; else FLEET=fleet; fi
fi
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fleet-smoke.XXXXXX")"
AGENT_PID=""
STEP=0
STARTED=$(date +%s)

cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { STEP=$((STEP + 1)); CURRENT="$1"; STEP_T0=$(date +%s%N); printf '%2d. %-58s' "$STEP" "$1"; }
ok() { printf 'ok  (%s ms)%s\n' "$(( ($(date +%s%N) - STEP_T0) / 1000000 ))" "${1:+  $1}"; }
fail() {
    printf 'FAILED\n\n'
    printf 'SMOKE TEST FAILED at step %d: %s\n' "$STEP" "$CURRENT"
    printf '  reason: %s\n' "$1"
    [ -n "${2:-}" ] && printf '  where to look: %s\n' "$2"
    [ -s "$WORK/out" ] && { printf '  last output:\n'; tail -n 15 "$WORK/out" | sed 's/^/    | /'; }
    exit "$STEP"
}
# json FILE EXPR: evaluate a Python expression over the parsed JSON document `d` (prints the result).
json() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }
# http METHOD PATH [curl args...]: body to $WORK/out, status code on stdout.
http() {
    local method="$1" path="$2"; shift 2
    curl -sS -o "$WORK/out" -w '%{http_code}' -X "$method" --max-time 15 "$@" "$API_URL$path" 2>"$WORK/curl.err" \
        || { cat "$WORK/curl.err" >"$WORK/out"; echo 000; }
}

echo "Fleet smoke test: API $API_URL, devices $DEVICE_HOST:$DEVICE_PORT"

step "health (/health)"
code=$(http GET /health)
[ "$code" = 200 ] || fail "/health answered HTTP $code" "runbooks/06-ready-failing.md"
[ "$(json "$WORK/out" "d['status']")" = ok ] || fail "/health status is not ok" "runbooks/06-ready-failing.md"
ok

step "readiness (/ready)"
code=$(http GET /ready)
[ "$code" = 200 ] || fail "/ready answered HTTP $code: $(cat "$WORK/out")" "runbooks/06-ready-failing.md"
ok

step "sign in (POST /auth/login)"
if [ -z "${SMOKE_EMAIL:-}" ] || [ -z "${SMOKE_PASSWORD:-}" ]; then
    creds="${DATA_DIR:-$HERE/var}/initial_admin.txt"
    [ -r "$creds" ] || fail "set SMOKE_EMAIL and SMOKE_PASSWORD (a superuser); $creds is not there either"
    SMOKE_EMAIL="$(sed -n 1p "$creds")"; SMOKE_PASSWORD="$(sed -n 2p "$creds")"
fi
body=$("$PY" -c 'import json,sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' \
    "$SMOKE_EMAIL" "$SMOKE_PASSWORD")
code=$(http POST /auth/login -H 'Content-Type: application/json' --data-binary "$body")
[ "$code" = 200 ] || fail "sign-in of $SMOKE_EMAIL answered HTTP $code"
TOKEN=$(json "$WORK/out" "d['access_token']")
[ "$(json "$WORK/out" "d['user']['role']")" = superuser ] || fail "$SMOKE_EMAIL is not a superuser"
AUTH=(-H "Authorization: Bearer $TOKEN")
ok "$SMOKE_EMAIL"

# The smoke vehicles are found by name and reused, so repeated runs do not pile up vehicles.
vehicle_named() {  # prints the id, nothing when there is none, ERR when the API did not answer
    [ "$(http GET "/vehicles?limit=1000" "${AUTH[@]}")" = 200 ] || { echo ERR; return; }
    "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(next((str(v["id"]) for v in d["items"] if v["name"] == sys.argv[2]), ""))' "$WORK/out" "$1"
}

step "tracker registered ($SMOKE_IMEI)"
code=$(http GET "/api/v2/devices/$SMOKE_IMEI/telemetry?limit=1" "${AUTH[@]}")
if [ "$code" = 404 ]; then
    "$FLEET" vehicle add --name "$SMOKE_NAME tracker" --imei "$SMOKE_IMEI" >"$WORK/out" 2>&1 \
        || fail "fleet vehicle add --imei $SMOKE_IMEI failed"
    ok "registered now"
elif [ "$code" = 200 ]; then
    ok "known"
else
    fail "GET /api/v2/devices/$SMOKE_IMEI/telemetry answered HTTP $code"
fi

step "tracker session (handshake, FLEX records, ACKs)"
"$FLEET" simulate navtelecom --devices 1 --rate 20 --duration 3 --host "$DEVICE_HOST" --port "$DEVICE_PORT" \
    --first-imei "$SMOKE_IMEI" --ack-timeout 5 --json >"$WORK/out" 2>&1 \
    || fail "the simulated tracker got no ACK from $DEVICE_HOST:$DEVICE_PORT" "runbooks/01-no-frames.md"
"$PY" - "$WORK/out" <<'PY' >"$WORK/sim" || fail "could not read the simulator's summary"
import json, sys
text = open(sys.argv[1]).read()
summary = json.loads(text[text.index("{"):])
print(summary["records_acked"])
PY
ACKED=$(cat "$WORK/sim")
[ "${ACKED:-0}" -gt 0 ] || fail "no record acknowledged" "runbooks/01-no-frames.md"
ok "$ACKED records acknowledged"

step "frames stored, positions served (GET /api/v2/devices/...)"
# Every received frame is kept with its arrival time; the simulator's device clock starts in 2025, and a
# repeated run resends the same records (stored once), so this run is recognised by its raw frames.
code=$(http GET "/api/v2/devices/$SMOKE_IMEI/raw-frames?limit=1" "${AUTH[@]}")
[ "$code" = 200 ] || fail "raw frames of $SMOKE_IMEI answered HTTP $code"
AGE=$("$PY" - "$WORK/out" <<'PY'
import json, sys
from datetime import datetime, timezone
d = json.load(open(sys.argv[1]))
stamp = d["items"][0]["received_at"] if d["items"] else None
print(int((datetime.now(timezone.utc) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()) if stamp else "")
PY
)
[ -n "$AGE" ] || fail "no frame of $SMOKE_IMEI stored" "runbooks/01-no-frames.md"
[ "$AGE" -lt 300 ] || fail "the newest frame of $SMOKE_IMEI is $AGE s old: this session was not stored" "runbooks/02-queue-spike.md"
code=$(http GET "/api/v2/devices/$SMOKE_IMEI/telemetry?limit=1&from=2000-01-01T00:00:00Z" "${AUTH[@]}")
[ "$code" = 200 ] || fail "telemetry of $SMOKE_IMEI answered HTTP $code"
POSITIONS=$(json "$WORK/out" "d['total']")
[ "${POSITIONS:-0}" -gt 0 ] || fail "no position of $SMOKE_IMEI is served" "runbooks/03-decode-errors-spike.md"
ok "newest frame ${AGE} s old, $POSITIONS positions"

step "reference agent on 127.0.0.1:$SMOKE_AGENT_PORT"
# A fixed key per port, so the vehicle registered by an earlier run keeps working (the agent listens on
# loopback only, and only while this script runs).
AGENT_KEY="${SMOKE_AGENT_KEY:-fleet-smoke-agent-$SMOKE_AGENT_PORT}"
"$FLEET" agent --port "$SMOKE_AGENT_PORT" --host 127.0.0.1 --api-key "$AGENT_KEY" --db "$WORK/agent.db" \
    --backfill 120 --seed 7 >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 150); do
    curl -fsS -o /dev/null -H "X-API-Key: $AGENT_KEY" "http://127.0.0.1:$SMOKE_AGENT_PORT/status" 2>/dev/null && break
    kill -0 "$AGENT_PID" 2>/dev/null || { cp "$WORK/agent.log" "$WORK/out"; fail "the agent exited"; }
    sleep 0.1
done
curl -fsS -o /dev/null -H "X-API-Key: $AGENT_KEY" "http://127.0.0.1:$SMOKE_AGENT_PORT/status" \
    || { cp "$WORK/agent.log" "$WORK/out"; fail "the agent does not answer /status"; }
ok

step "sync vehicle for the agent"
VEHICLE=$(vehicle_named "$SMOKE_NAME agent $SMOKE_AGENT_PORT")
[ "$VEHICLE" != ERR ] || fail "GET /vehicles failed"
if [ -z "$VEHICLE" ]; then
    "$FLEET" vehicle add --name "$SMOKE_NAME agent $SMOKE_AGENT_PORT" --vpn-ip 127.0.0.1 \
        --api-port "$SMOKE_AGENT_PORT" --api-key "$AGENT_KEY" >"$WORK/out" 2>&1 || fail "fleet vehicle add failed"
    VEHICLE=$(tail -n 1 "$WORK/out" | tr -dc '0-9')
    ok "vehicle $VEHICLE created"
else
    ok "vehicle $VEHICLE reused"
fi

step "one sync cycle (fleet sync --once)"
SYNC_T0=$("$PY" -c 'import time; print(time.time())')
"$FLEET" sync --once --vehicle "$VEHICLE" >"$WORK/out" 2>&1 || fail "fleet sync --once failed" "runbooks/07-sync-failing.md"
grep -qE "1 (timeout|error)" "$WORK/out" && fail "the pull of vehicle $VEHICLE failed" "runbooks/07-sync-failing.md"
# Pulled by this command, or - when the server's own sync role held the vehicle's lease at that moment - by
# the server: either way the vehicle must be synced and online within a few cycles.
synced=""
for _ in $(seq 1 60); do
    if [ "$(http GET "/vehicles/$VEHICLE" "${AUTH[@]}")" = 200 ] && "$PY" - "$WORK/out" "$SYNC_T0" <<'PY'
import json, sys
from datetime import datetime
d = json.load(open(sys.argv[1]))
stamp = d.get("last_sync_at")
fresh = stamp is not None and datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() >= float(sys.argv[2]) - 1
sys.exit(0 if fresh and d.get("sync_status") == "online" else 1)
PY
    then synced=1; break; fi
    sleep 1
done
[ -n "$synced" ] || fail "vehicle $VEHICLE was not synced within 60 s: $(cat "$WORK/out")" "runbooks/07-sync-failing.md"
ok

step "synced data visible (GET /vehicles/{id}/measurements)"
FROM=$("$PY" -c 'from datetime import datetime, timedelta, timezone; print((datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
code=$(http GET "/vehicles/$VEHICLE/measurements?from=$FROM" "${AUTH[@]}")
[ "$code" = 200 ] || fail "measurements of vehicle $VEHICLE answered HTTP $code"
ROWS=$(json "$WORK/out" "d['total']")
[ "${ROWS:-0}" -gt 0 ] || fail "no measurement of vehicle $VEHICLE in the last hour" "runbooks/07-sync-failing.md"
ok "$ROWS measurements"

step "metrics (/metrics)"
METRICS_AUTH=()
[ -n "${METRICS_API_KEY:-}" ] && METRICS_AUTH=(-H "X-API-Key: $METRICS_API_KEY")
code=$(http GET /metrics "${METRICS_AUTH[@]}")
[ "$code" = 200 ] || fail "/metrics answered HTTP $code (localhost only unless METRICS_API_KEY)"
for name in http_requests_total database_queries_total fleet_ingest_frames_total fleet_ingest_ack_latency_seconds \
    fleet_sync_vehicle_syncs_total fleet_db_pool_connections users_total fleet_disk_free_bytes; do
    grep -q "^# TYPE $name " "$WORK/out" || fail "metric $name is missing"
done
grep -q '^http_requests_total{.*route="/auth/login"' "$WORK/out" || fail "this run's requests are not counted"
ok

echo
echo "SMOKE TEST PASSED: $STEP steps in $(( $(date +%s) - STARTED )) s"
