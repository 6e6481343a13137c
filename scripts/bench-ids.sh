#!/usr/bin/env bash
# The IDS at national scale (examples/bench_ids): a synthetic cdr of PATIENTS patients with
# VISITS_PER_PATIENT visits each (site 1: 30k patients, the rest ~1250 per site), then the
# rebuilds (and the IDS queue's drain rate with 1, 2 and 4 workers), EXPLAIN of every definition,
# apply with IDS maintenance off and on side by side,
# apply-to-report latencies (in the transaction and through the queue), a verification and
# every report for all sites and one. The database is dropped at the end (KEEP=1 keeps it;
# REPORTS_ONLY=1 then times the reports again on it, after a change of their SQL).
#
#   scripts/bench-ids.sh [PATIENTS] [VISITS_PER_PATIENT]      (default 100000, 10: 1M visits)
#   scripts/bench-ids.sh 1000000 10                            (national: 1M patients, 10M visits;
#                                                               about 20 GB of disk for a while)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-100000}
visits=${2:-10}
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --quiet --example bench_ids
runpg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/psql | head -1)")
psql_admin() { runpg "$pgbin/psql" -q -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres "$@"; }
db=emr_bench_ids
if [ "${REPORTS_ONLY:-0}" = 1 ]; then
  # the reports only, timed again on the database an earlier KEEP=1 run left
  exec target/release/examples/bench_ids "${EMR_PG_URL%/*}/$db" "$patients" "$visits"
fi
psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db OWNER emr"
[ "${KEEP:-0}" = 1 ] || trap 'psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null' EXIT
target/release/examples/bench_ids "${EMR_PG_URL%/*}/$db" "$patients" "$visits"
