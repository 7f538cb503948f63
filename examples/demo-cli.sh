#!/bin/sh
# make demo, second part: the zcrm command (bin/zcrm).
#
# Without Zoho credentials in the environment it starts the local Zoho CRM simulator,
# seeds 1,000 price-book relations and shows a session: a dry run, a run with a journal,
# the same run again (nothing left to send) and an id that fails (exit status 1).
# With credentials it only shows the dry run of what ZCRM_DEMO_MODULE, ZCRM_DEMO_RECORD,
# ZCRM_DEMO_RELATED and ZCRM_DEMO_IDS name (examples/demo.lua has delinked them already).
#
#   sh examples/demo-cli.sh            (LUA=luajit for the LuaJIT build)
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
LUA=${LUA:-lua5.4}
case "$LUA" in *luajit*) abi=5.1 ;; *) abi=5.4 ;; esac
LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
LUA_CPATH="$ROOT/build/$abi/?.so;;"
export LUA_PATH LUA_CPATH

zcrm() {
    "$LUA" "$ROOT/bin/zcrm" "$@"
}

# Prints a command as a session would show it, then runs it; its status goes in $rc.
show() {
    printf '\n$ %s\n' "$*"
    rc=0
    "$@" || rc=$?
}

if [ -n "${ZCRM_ACCESS_TOKEN:-}${ZCRM_REFRESH_TOKEN:-}" ]; then
    # shellcheck disable=SC2046  # the ids, one argument each
    show zcrm delink "${ZCRM_DEMO_MODULE:?}" "${ZCRM_DEMO_RECORD:?}" "${ZCRM_DEMO_RELATED:?}" \
        $(printf '%s' "${ZCRM_DEMO_IDS:?}" | tr ',' ' ') --dry-run
    exit "$rc"
fi

PRODUCT=3477061000007606020
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zcrm-demo-cli.XXXXXX")
sim_pid=
stop() {
    exec 3>&- 2>/dev/null || true # the simulator stops at the end of its input
    if [ -n "$sim_pid" ]; then wait "$sim_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap stop EXIT
trap 'exit 130' INT TERM

# The simulator in the background, its input a FIFO held open on fd 3.
mkfifo "$tmp/sim.in"
"$LUA" spec/support/simulator.lua <"$tmp/sim.in" >"$tmp/sim.out" 2>&1 &
sim_pid=$!
exec 3>"$tmp/sim.in"
tries=0
until grep -q '^Zoho CRM simulator at ' "$tmp/sim.out"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$sim_pid" 2>/dev/null; then
        cat "$tmp/sim.out" >&2
        echo "demo-cli: the simulator did not start" >&2
        exit 1
    fi
    sleep 0.1
done
SIM=$(sed -n 's/^Zoho CRM simulator at \([^ ]*\).*/\1/p' "$tmp/sim.out")

i=0
while [ $i -lt 1000 ]; do
    i=$((i + 1))
    printf '3477061%012d\n' $((7596000 + i))
done >"$tmp/ids.txt"
ids_json=$(sed 's/.*/"&"/' "$tmp/ids.txt" | paste -sd, -)
curl -fsS -X POST "$SIM/__sim/seed" -o /dev/null \
    -d "{\"module\":\"Products\",\"record\":\"$PRODUCT\",\"related\":\"Price_Books\",\"ids\":[$ids_json]}"
curl -fsS -X POST "$SIM/__sim/config" -o /dev/null -d '{"latency_ms":100}' # slow enough to see progress

cd "$tmp"
echo "The zcrm command against the Zoho CRM simulator at $SIM,"
echo "where Products/$PRODUCT has 1000 Price_Books relations, listed in ids.txt."
echo "Credentials come from the environment (never from the command line):"
echo "  ZCRM_CLIENT_ID=sim-client ZCRM_CLIENT_SECRET=... ZCRM_REFRESH_TOKEN=... ZCRM_ACCOUNTS_URL=$SIM ZCRM_API_DOMAIN=$SIM"
ZCRM_CLIENT_ID=sim-client ZCRM_CLIENT_SECRET=sim-secret ZCRM_REFRESH_TOKEN=sim-refresh
ZCRM_ACCOUNTS_URL=$SIM ZCRM_API_DOMAIN=$SIM
export ZCRM_CLIENT_ID ZCRM_CLIENT_SECRET ZCRM_REFRESH_TOKEN ZCRM_ACCOUNTS_URL ZCRM_API_DOMAIN

show zcrm delink Products "$PRODUCT" Price_Books --ids-file ids.txt --dry-run

printf '\n$ zcrm delink Products %s Price_Books --ids-file ids.txt --journal run.journal --output jsonl > result.jsonl\n' \
    "$PRODUCT"
rc=0
zcrm delink Products "$PRODUCT" Price_Books --ids-file ids.txt --journal run.journal --output jsonl >result.jsonl || rc=$?
echo "(exit status $rc)"
first_rc=$rc
show head -n 3 result.jsonl
show tail -n 2 run.journal

printf '\n$ zcrm delink Products %s Price_Books --ids-file ids.txt --journal run.journal > again.tsv\n' "$PRODUCT"
rc=0
zcrm delink Products "$PRODUCT" Price_Books --ids-file ids.txt --journal run.journal >again.tsv || rc=$?
echo "(exit status $rc: per the journal every id is delinked already, so nothing was sent)"
again_rc=$rc
show head -n 2 again.tsv

show zcrm delink Products "$PRODUCT" Price_Books 3477061000007597001
echo "(exit status $rc: that id is not related)"
printf '\nsimulator counters: %s\n' "$(curl -fsS "$SIM/__sim/counters")"
[ "$first_rc" = 0 ] && [ "$again_rc" = 0 ] && [ "$rc" = 1 ]
