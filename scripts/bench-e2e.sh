#!/usr/bin/env bash
# End-to-end throughput: writes a clinic backlog into the EMR with the tailer stopped, then
# starts receiver + tailer and measures how fast the tailer reads the backlog (capture) and how
# long until the central stores have everything (delivery) and the IDS tables are current, when
# the first visits reached the outbox and the first batch the stores (the pipeline's start), the
# tailer's peak RSS and CPU seconds per 100k rows; then, as the baseline from the same run, a
# plain mysql_async read of the same binlog range (examples/bench_decode.rs), to which capture
# is compared.
#
#   scripts/bench-e2e.sh [PATIENTS] [DAYS]      (default 2000 patients over 10 days)
#
# AGAIN=1 reads the backlog the previous run wrote once more (bench_src and its binlog range are
# kept; the simulate step takes longer than the rest), with a fresh tailer state and fresh
# central stores. TAILER_WRAP runs the tailer under a profiler, e.g.
# CARGO_FEATURES=system-alloc TAILER_WRAP="heaptrack -o /tmp/tailer" (heaptrack hooks malloc,
# which mimalloc bypasses; the RSS and CPU figures are then the wrapper's). TAILER_BIN runs
# another build's tailer against this build's receiver, for a baseline side by side, e.g.
# TAILER_BIN=/tmp/emr-stream-base AGAIN=1 TAILER_WRAP="perf stat -e instructions:u -o F".
# RECEIVER_BIN does the same for the receiver. IN_FLIGHT=N sets the tailer's ship.in_flight
# (batches posted before the first is answered; 2 by default). LINK_DELAY_MS=N puts a delay
# line between the tailer and the receiver (examples/delay_line.rs: N ms each way, no
# bandwidth limit), a distant facility's link. INLINE_MAX=N sets the receiver's
# ids.inline_max_patients.
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-2000}
days=${2:-10}
work=state/bench
bin=target/release/emr-stream
sock=.services/mariadb/mysqld.sock

scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --quiet ${CARGO_FEATURES:+--features "$CARGO_FEATURES"}
cargo build --release --quiet --example bench_decode
[ -z "${LINK_DELAY_MS:-}" ] || cargo build --release --quiet --example delay_line
pids=()
trap 'for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

my() { mariadb --protocol=socket -S "$sock" -uroot -N -e "$1"; }
# A binlog position "binlog.000012:3456" as one comparable number: file sequence * 2^32 + offset.
position_number() { sed -n 's/^[^:]*\.\([0-9]*\):\([0-9]*\)$/\1 \2/p' | awk '{printf "%.0f\n", $1 * 4294967296 + $2}'; }
saved=state/bench-e2e.source
if [ "${AGAIN:-}" = 1 ]; then
  [ -f "$saved" ] || { echo "AGAIN=1: no backlog of an earlier run ($saved is missing)" >&2; exit 1; }
  read -r start end < "$saved"
  # (the test suite purges binary logs: a backlog whose first file is gone must be written again)
  if ! my "SHOW BINARY LOGS" | awk '{print $1}' | grep -qx "${start%%:*}"; then
    echo "AGAIN=1: the backlog's binlog ${start%%:*} was purged since; run without AGAIN to write it again" >&2
    exit 1
  fi
  echo "reading the backlog of the previous run again ($start, $(my "SELECT COUNT(*) FROM bench_src.obs") obs)"
  my "DROP DATABASE IF EXISTS bench_mirror"
else
  rm -f "$saved"
  my "DROP DATABASE IF EXISTS bench_src; DROP DATABASE IF EXISTS bench_mirror"
fi
runpg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/psql | head -1)")
runpg "$pgbin/psql" -q -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres -c "DROP DATABASE IF EXISTS emr_bench" -c "CREATE DATABASE emr_bench OWNER emr" 2>/dev/null
if [ "${AGAIN:-}" != 1 ]; then
  start=$(my "SHOW MASTER STATUS" | awk '{print $1":"$2}')
  "$bin" simulate --mysql "$EMR_MYSQL_URL" --database bench_src --init-schema --patients 0 --days 1 >/dev/null
  echo "writing the backlog: $patients patients over $days days (tailer stopped)"
  /usr/bin/time -f "simulate: %e s" "$bin" simulate --mysql "$EMR_MYSQL_URL" --database bench_src --patients "$patients" --days "$days"
  # One small transaction in another database ends the range: when the backlog fills a binlog
  # file, the server starts the next one after it and SHOW MASTER STATUS points past its header,
  # where no transaction ends (the checkpoint would never reach it).
  my "CREATE DATABASE IF NOT EXISTS bench_end; CREATE TABLE IF NOT EXISTS bench_end.mark (id int PRIMARY KEY) ENGINE=InnoDB; REPLACE INTO bench_end.mark VALUES (1)"
  end=$(my "SHOW MASTER STATUS" | awk '{print $1":"$2}')
  my "DROP DATABASE bench_end"
  mkdir -p state && echo "$start $end" > "$saved"
fi
target=$(position_number <<<"$end")

rm -rf "$work" && mkdir -p "$work"
ship_port=8081
if [ -n "${LINK_DELAY_MS:-}" ]; then
  # the tailer ships through a delay line: LINK_DELAY_MS each way between it and the receiver
  ship_port=8082
  target/release/examples/delay_line 127.0.0.1:8082 127.0.0.1:8081 "$LINK_DELAY_MS" & pids+=($!)
fi
sed -e 's#^database = "openmrs"#database = "bench_src"#' -e "s#^start = \"current\"#start = \"$start\"#" \
    -e "s#^dir = \"state/tailer\"#dir = \"$work/tailer-state\"#" -e 's#^settle_ms = 5000#settle_ms = 500#' \
    -e 's#^idle_timeout_secs = 1800#idle_timeout_secs = 2#' -e 's#127.0.0.1:9187#127.0.0.1:9188#' \
    -e "s#127.0.0.1:8080#127.0.0.1:$ship_port#" -e "s#^in_flight = 2#in_flight = ${IN_FLIGHT:-2}#" \
    config/tailer.example.toml > "$work/tailer.toml"
sed -e 's#^database = "cdr_mirror"#database = "bench_mirror"#' -e 's#25432/emr"#25432/emr_bench"#' \
    -e 's#127.0.0.1:8080#127.0.0.1:8081#' \
    -e "s#^inline_max_patients = .*#inline_max_patients = ${INLINE_MAX:-$(sed -n 's/^inline_max_patients = //p' config/receiver.example.toml)}#" \
    config/receiver.example.toml > "$work/receiver.toml"
RUST_LOG=warn "${RECEIVER_BIN:-$bin}" receiver --config "$work/receiver.toml" 2>"$work/receiver.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8081/healthz >/dev/null && break; sleep 0.2; done

t0=$(date +%s.%N)
RUST_LOG=warn ${TAILER_WRAP:-} "${TAILER_BIN:-$bin}" tailer --config "$work/tailer.toml" 2>"$work/tailer.log" & tailer=$!; pids+=($tailer)
captured=""
moved=""
while :; do
  status=$(curl -sf http://127.0.0.1:9188/status || true)
  pos=$(sed -n 's/.*"checkpoint":"\([^"]*\)".*/\1/p' <<<"$status" | position_number)
  now=$(date +%s.%N)
  if [ -z "$captured" ] && [ -n "$pos" ] && [ "$pos" -ge "$target" ]; then captured=$now; fi
  if [ -z "$moved" ] && grep -q '"outbox_visits":[1-9]' <<<"$status"; then moved=$now; fi
  if [ -n "$captured" ] && grep -q '"open_visits":0' <<<"$status" && grep -q '"outbox_visits":0' <<<"$status"; then break; fi
  if ! kill -0 "$tailer" 2>/dev/null; then
    echo "the tailer exited before delivering the backlog; its log ($work/tailer.log) ends:" >&2
    tail -5 "$work/tailer.log" >&2
    exit 1
  fi
  sleep 0.1
done
done_at=$(date +%s.%N)
# The IDS tables are current when no patient waits in their queue (batches with more than
# ids.inline_max_patients patients are recomputed by the receiver's queue workers, after
# their apply).
pgq() { runpg "$pgbin/psql" -qAt -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres -d emr_bench -c "$1"; }
queued=""
for _ in $(seq 1 6000); do
  queued=$(pgq "SELECT count(*) FROM ids.dirty_patient")
  [ "$queued" = 0 ] && break
  sleep 0.1
done
ids_at=$(date +%s.%N)
[ "$queued" = 0 ] || echo "the IDS queue still holds $queued patients after 10 minutes (see $work/receiver.log)" >&2
rows=$(curl -sf http://127.0.0.1:9188/metrics | awk '/^emr_tailer_binlog_rows_total/ {s += $2} END {print s}')
raw=$(curl -sf http://127.0.0.1:9188/metrics | awk '/^emr_ship_bytes_raw_total/ {print $2}')
gz=$(curl -sf http://127.0.0.1:9188/metrics | awk '/^emr_ship_bytes_compressed_total/ {print $2}')
visits=$(curl -sf http://127.0.0.1:9188/metrics | awk '/^emr_ship_visits_total/ {print $2}')
rss=$(awk '/VmHWM/ {print $2}' /proc/$tailer/status)
# utime + stime of the tailer, in clock ticks (fields 14 and 15 of /proc/PID/stat)
ticks=$(awk '{print $14 + $15}' /proc/$tailer/stat)
hz=$(getconf CLK_TCK)
# Where delivery's time went: the shipper's requests (gzip + post + the receiver's answer) and
# the receiver's apply into each store.
ship=$(curl -sf http://127.0.0.1:9188/metrics | awk '
  /^emr_ship_request_duration_seconds_sum/ {s = $2} /^emr_ship_request_duration_seconds_count/ {n = $2}
  END {printf "%d requests, %.2f s in all", n, s}')
apply=$(curl -sf http://127.0.0.1:8081/metrics | awk '
  /^emr_receiver_apply_duration_seconds_sum\{store="mysql"/ {m = $2}
  /^emr_receiver_apply_duration_seconds_sum\{store="postgres"/ {p = $2}
  /^emr_ids_maintain_duration_seconds_sum\{path="worker"/ {w = $2; next}
  /^emr_ids_maintain_duration_seconds_sum/ {i += $2}
  END {printf "MySQL %.2f s, PostgreSQL %.2f s (side by side; of PostgreSQL'"'"'s, IDS maintenance in the batches'"'"' transactions %.2f s; the queue worker %.2f s more)", m, p, i, w}')
# When the first batch's transaction began in PostgreSQL (the same clock as t0).
first_batch=$(pgq "SELECT extract(epoch FROM min(received_at)) FROM cdr._stream_batches")
plain=$(target/release/examples/bench_decode "$EMR_MYSQL_URL" bench_src "$start" "$end" | awk '/^plain mysql_async/ {print $(NF-1)}')
awk -v t0="$t0" -v c="$captured" -v d="$done_at" -v rows="$rows" -v rss="$rss" -v raw="$raw" -v gz="$gz" -v visits="$visits" \
    -v ticks="$ticks" -v hz="$hz" -v plain="$plain" -v ids="$ids_at" -v moved="${moved:-$done_at}" \
    -v first="${first_batch:-$done_at}" 'BEGIN {
  printf "rows read by the tailer:      %d\n", rows
  printf "capture (binlog -> sled):     %.2f s = %.0f rows/s (%.2fx a plain mysql_async read of the same binlog: %.0f rows/s)\n", c - t0, rows / (c - t0), rows / (c - t0) / plain, plain
  printf "delivery (-> both stores):    %.2f s = %.0f rows/s end to end\n", d - t0, rows / (d - t0)
  printf "IDS tables current:           %.2f s = %.0f rows/s end to end\n", ids - t0, rows / (ids - t0)
  printf "pipeline:                     first visits in the outbox after %.2f s, the first batch applied from %.2f s\n", moved - t0, first - t0
  printf "visit versions shipped:       %d, %.0f bytes/visit gzip (%.0f raw)\n", visits, gz / visits, raw / visits
  printf "tailer peak RSS:              %.1f MiB\n", rss / 1024
  printf "tailer CPU:                   %.2f s in all, %.2f s per 100k rows\n", ticks / hz, ticks / hz / rows * 100000
}'
echo "shipper's requests:           $ship"
echo "receiver's apply:             $apply"
