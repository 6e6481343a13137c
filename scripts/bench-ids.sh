#!/usr/bin/env bash
# IDS view refresh and report times at national scale (examples/bench_ids.rs): a synthetic
# cdr of PATIENTS patients over 100 sites with VISITS_PER_PATIENT visits each, then the
# receiver's refresh of all views and the reports for all sites.
#
#   scripts/bench-ids.sh [PATIENTS] [VISITS_PER_PATIENT]      (default 100000, 10: 1M visits)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-100000}
visits=${2:-10}
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --quiet --example bench_ids
runpg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/psql | head -1)")
runpg "$pgbin/psql" -q -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres -c "DROP DATABASE IF EXISTS emr_bench_ids" -c "CREATE DATABASE emr_bench_ids OWNER emr" 2>/dev/null
target/release/examples/bench_ids "${EMR_PG_URL%/*}/emr_bench_ids" "$patients" "$visits"
