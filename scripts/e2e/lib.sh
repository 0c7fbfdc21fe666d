# Helpers of the end-to-end scripts (sourced; run-sip uses it): results,
# background processes killed on exit, waiting, /metrics, the aiortc venv
# and the corecast binary. The caller sets `out` (its log folder) first.

# --- messages and results
fail() {
    echo "$(basename "$0"): FAIL: $*" >&2
    exit 1
}
step() {
    echo "== $* ($(date +%T))"
}
passed=0
failed=0
results=()
pass() {
    passed=$((passed + 1))
    results+=("PASS $1${2:+: $2}")
    echo "PASS $1${2:+: $2}"
}
flunk() {
    failed=$((failed + 1))
    results+=("FAIL $1${2:+: $2}")
    echo "FAIL $1${2:+: $2}"
}
# check NAME DETAIL COMMAND...: PASS when COMMAND succeeds.
check() {
    local name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name" "$detail"; else flunk "$name" "$detail"; fi
}
# show LOG [LINES]: the last lines of a log, indented (after a failure).
show() {
    echo "  --- last lines of $1:"
    tail -n "${2:-15}" "$1" 2>/dev/null | sed 's/^/  | /'
}
# summary NAME: every result, "N passed, M failed"; fails on any failure.
summary() {
    echo
    echo "== $1 summary"
    printf '%s\n' "${results[@]}"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}

# --- processes: everything spawned is killed on exit
pids=()
cleanup() {
    local status=$? p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# spawn LOG COMMAND...: runs COMMAND in the background; its pid in $spawned.
spawn() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    spawned=$!
    pids+=("$spawned")
}
# reap PID: waits for a process that ended or was killed; its status in
# $reaped. Forgets the pid so that cleanup does not signal a reused one.
reap() {
    reaped=0
    wait "$1" 2>/dev/null || reaped=$?
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# --- time
now_us() { echo "${EPOCHREALTIME/./}"; }
since() {
    local us=$(($(now_us) - $1))
    printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}
# wait_for SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds;
# the time it took in $waited. Fails after SECONDS.
wait_for() {
    local limit=$(($1 * 1000000)) t0
    shift
    t0=$(now_us)
    while :; do
        if "$@"; then
            waited=$(since "$t0")
            return 0
        fi
        if [ $(($(now_us) - t0)) -ge "$limit" ]; then
            waited=$(since "$t0")
            return 1
        fi
        sleep 0.2
    done
}

# --- the server
# metric_sum TEXT NAME: the sum of every series of NAME (any labels), or
# "absent" when the text has none.
metric_sum() {
    awk -v name="$2" '$1 == name || index($1, name "{") == 1 { s += $NF; n++ }
        END { if (n) printf "%g\n", s; else print "absent" }' <<<"$1"
}
positive() { [ "$1" != absent ] && awk -v x="$1" 'BEGIN { exit !(x > 0) }'; }
# server_alive PID HTTP: the process lives and answers /healthz.
server_alive() { kill -0 "$1" 2>/dev/null && curl -fsS --max-time 3 "http://$2/healthz" >/dev/null; }

# e2e_venv: target/e2e-venv with scripts/e2e/requirements.txt; prints its python.
e2e_venv() {
    local venv=target/e2e-venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2 || fail "cannot create $venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r scripts/e2e/requirements.txt >&2 || fail "cannot install aiortc into $venv"
    echo "$venv/bin/python"
}
# corecast_bin: $CORECAST_BIN, else scripts/build's release binary.
corecast_bin() {
    if [ -n "${CORECAST_BIN:-}" ]; then
        [ -x "$CORECAST_BIN" ] || fail "$CORECAST_BIN is not executable"
        echo "$CORECAST_BIN"
        return
    fi
    scripts/build >&2 || fail "build failed"
    echo target/release/corecast
}
