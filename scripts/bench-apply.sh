#!/usr/bin/env bash
# Receiver apply throughput for 100k rows into both stores (IDS maintenance off and on; a site's
# batches two at a time as its tailer sends them, and once one at a time), next to
# the baseline from the same run: plain upserts of as many rows, of a site of their own, into the
# same tables of both stores at once (1000-row multi-row upserts into MySQL, COPY + INSERT … ON
# CONFLICT into PostgreSQL). Three rounds of the
# baseline and the receiver's five runs; prints each figure's median of three, the ratios of the
# medians and each round's ratio to its own baseline (examples/bench_apply.rs).
#
#   scripts/bench-apply.sh [ROWS] [ROWS_PER_BATCH]      (default 100000, 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
per=${2:-2000}
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --quiet --example bench_apply
mariadb --protocol=socket -S .services/mariadb/mysqld.sock -uroot -e "DROP DATABASE IF EXISTS bench_apply_mirror"
runpg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/psql | head -1)")
runpg "$pgbin/psql" -q -h 127.0.0.1 -p "${EMR_PG_PORT:-25432}" -U postgres -c "DROP DATABASE IF EXISTS emr_bench_apply" -c "CREATE DATABASE emr_bench_apply OWNER emr" 2>/dev/null
${BENCH_WRAP:-} target/release/examples/bench_apply "$EMR_MYSQL_URL" "${EMR_PG_URL%/*}/emr_bench_apply" "$rows" "$per"
