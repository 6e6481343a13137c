#!/usr/bin/env bash
# The whole system in one go: private MariaDB + PostgreSQL, the fixture EMR, the receiver and
# the tailer, a simulated ART clinic; waits until the central stores have caught up, prints the
# visits report and a metrics excerpt, and stops what it started.
#
#   scripts/demo.sh [PATIENTS] [DAYS]        (default 200 patients over 7 days)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-200}
days=${2:-7}
work=state/demo
bin=target/debug/emr-stream

say() { printf '\n== %s\n' "$*"; }

services_were_down=$(scripts/services.sh status | grep -c stopped || true)
scripts/services.sh start
eval "$(scripts/services.sh env)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$services_were_down" != 0 ]; then scripts/services.sh stop; fi
}
trap cleanup EXIT

say "building emr-stream"
cargo build --quiet

say "fresh demo databases: openmrs_demo (EMR), cdr_demo (mirror), PostgreSQL emr_demo"
sock=.services/mariadb/mysqld.sock
mariadb --protocol=socket -S "$sock" -uroot -e "DROP DATABASE IF EXISTS openmrs_demo; DROP DATABASE IF EXISTS cdr_demo"
runpg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -1 || command -v psql)")
runpg "$pgbin/psql" -q -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres -c "DROP DATABASE IF EXISTS emr_demo" -c "CREATE DATABASE emr_demo OWNER emr"
start=$(mariadb --protocol=socket -S "$sock" -uroot -N -e "SHOW MASTER STATUS" | awk '{print $1":"$2}')
"$bin" simulate --mysql "$EMR_MYSQL_URL" --database openmrs_demo --init-schema --patients 0 --days 1 >/dev/null

rm -rf "$work" && mkdir -p "$work"
# Every link encrypted and verified against the private CA of scripts/services.sh: the tailer
# to the EMR and to the receiver (HTTPS), the receiver to both stores, as the user emr_tls,
# which the servers refuse in plain.
ca=$EMR_TLS_DIR/ca.pem
sed -e "s#^database = \"openmrs\"#database = \"openmrs_demo\"#" -e "s#^start = \"current\"#start = \"$start\"#" \
    -e "s#^dir = \"state/tailer\"#dir = \"$work/tailer-state\"#" -e "s#^settle_ms = 5000#settle_ms = 1000#" \
    -e "s#^idle_timeout_secs = 1800#idle_timeout_secs = 5#" -e "s#mysql://emr:emr@#mysql://emr_tls:emr@#" \
    -e "s#^\# ca_file = \"/etc/emr-stream/emr-db-ca.pem\"#ca_file = \"$ca\"#" \
    -e "s#^url = \"http://127.0.0.1:8080#url = \"https://127.0.0.1:8080#" \
    -e "s#^\# ca_file = \"/etc/emr-stream/cdr-ca.pem\"#ca_file = \"$ca\"#" config/tailer.example.toml > "$work/tailer.toml"
sed -e 's#^database = "cdr_mirror"#database = "cdr_demo"#' -e 's#25432/emr"#25432/emr_demo"#' \
    -e "s#://emr:emr@#://emr_tls:emr@#" -e "s#^\# ca_file = \"/etc/emr-stream/db-ca.pem\"#ca_file = \"$ca\"#" \
    -e "s#^\# \[tls\]#[tls]#" -e "s#^\# cert_file = .*#cert_file = \"$EMR_TLS_DIR/server.pem\"#" \
    -e "s#^\# key_file = .*#key_file = \"$EMR_TLS_DIR/server.key\"#" \
    config/receiver.example.toml > "$work/receiver.toml"

say "starting the receiver and the tailer (logs in $work/)"
"$bin" receiver --config "$work/receiver.toml" 2>"$work/receiver.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf --cacert "$ca" https://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done
curl -sf --cacert "$ca" https://127.0.0.1:8080/healthz >/dev/null || { cat "$work/receiver.log"; exit 1; }
"$bin" tailer --config "$work/tailer.toml" 2>"$work/tailer.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:9187/healthz >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:9187/healthz >/dev/null || { cat "$work/tailer.log"; exit 1; }

say "simulating $patients patients over $days clinic days"
"$bin" simulate --mysql "$EMR_MYSQL_URL" --database openmrs_demo --patients "$patients" --days "$days"
target=$(mariadb --protocol=socket -S "$sock" -uroot -N -e "SHOW MASTER STATUS" | awk '{split($1, f, "."); printf "%.0f\n", f[2] * 4294967296 + $2}')

say "waiting for the central stores to catch up"
for _ in $(seq 1 300); do
  status=$(curl -sf http://127.0.0.1:9187/status || true)
  # checkpoint "binlog.000012:3456" as one comparable number: file sequence * 2^32 + offset
  pos=$(sed -n 's/.*"checkpoint":"[^"]*\.\([0-9]*\):\([0-9]*\)".*/\1 \2/p' <<<"$status" | awk '{printf "%.0f\n", $1 * 4294967296 + $2}')
  if [ -n "$pos" ] && [ "$pos" -ge "$target" ] && grep -q '"open_visits":0' <<<"$status" && grep -q '"outbox_visits":0' <<<"$status"; then
    break
  fi
  sleep 0.5
done
echo "tailer: $status"
# Reports and the receiver's /status answer readers (config/receiver.example.toml [[readers]]).
reader="Authorization: Bearer demo-reader-counts"
# Reports see a batch when it commits; only a batch too big for its own transaction waits in
# the IDS queue (none here, but say so if one does).
for _ in $(seq 1 60); do
  queued=$(curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/tx_curr?site_id=101" | sed -n 's/.*"queued_patients":\([0-9]*\).*/\1/p')
  [ "${queued:-0}" = 0 ] && break
  echo "waiting for $queued queued patients"; sleep 0.5
done

say "TX_CURR today (GET /api/v1/reports/tx_curr?site_id=101&format=csv)"
curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/tx_curr?site_id=101&format=csv" | awk -F, 'NR <= 2 || $3 > 0'
say "TX_CURR by months dispensed (GET /api/v1/reports/tx_curr_mmd?location=101&format=csv)"
curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/tx_curr_mmd?location=101&format=csv" | awk -F, 'NR <= 2 || $3 + $4 + $5 > 0'
say "regimen distribution (GET /api/v1/reports/regimen_distribution?site_id=101&format=csv)"
curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/regimen_distribution?site_id=101&format=csv" | head -12
say "TX_ML this quarter (GET /api/v1/reports/TX_ML?site_id=101&format=csv)"
curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/TX_ML?site_id=101&format=csv" | awk -F, 'NR <= 2 || $3 + $4 + $5 + $6 + $7 + $8 > 0'
first=$(date -d "-$((days + 30)) days" +%F)
say "visits report (GET /api/v1/reports/visits?site_id=101&start_date=$first&end_date=$(date +%F)&format=csv&detail=days)"
curl -sf --cacert "$ca" -H "$reader" "https://127.0.0.1:8080/api/v1/reports/visits?site_id=101&start_date=$first&end_date=$(date +%F)&format=csv&detail=days"
say "same count on the EMR itself"
mariadb --protocol=socket -S "$sock" -uroot -e "SELECT DATE(e.encounter_datetime) AS visit_date, COUNT(DISTINCT e.patient_id) AS visits FROM openmrs_demo.encounter e JOIN openmrs_demo.patient p ON p.patient_id = e.patient_id AND p.voided = 0 JOIN openmrs_demo.person pe ON pe.person_id = e.patient_id AND pe.voided = 0 WHERE e.voided = 0 GROUP BY 1 ORDER BY 1"

say "metrics excerpt (tailer)"
curl -sf http://127.0.0.1:9187/metrics | grep -E '^emr_(tailer_(transactions|lag|open)|outbox_visits|ship_(requests|visits|bytes))' | sort
say "the IDS tables against their definitions (emr-stream ids verify)"
"$bin" ids verify --config "$work/receiver.toml"

say "metrics excerpt (receiver)"
curl -sf --cacert "$ca" https://127.0.0.1:8080/metrics | grep -E '^emr_(receiver_(requests|rows_applied_total\{table="(encounter|obs)")|ids_(maintain_duration_seconds_(sum|count)|queue_oldest))' | sort
