#!/usr/bin/env bash
# Decode throughput on 1M obs rows: the tailer's binlog adapter next to a plain mysql_async read
# of the same binlog range (examples/bench_decode.rs).
#
#   scripts/bench-decode.sh [ROWS]     (default 1000000, written in transactions of 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
sock=.services/mariadb/mysqld.sock
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --quiet --example bench_decode
my() { mariadb --protocol=socket -S "$sock" -uroot -N -e "$1"; }
my "DROP DATABASE IF EXISTS bench_decode"
target/release/emr-stream simulate --mysql "$EMR_MYSQL_URL" --database bench_decode --init-schema --patients 0 --days 1 >/dev/null 2>&1 \
  || { cargo build --release --quiet && target/release/emr-stream simulate --mysql "$EMR_MYSQL_URL" --database bench_decode --init-schema --patients 0 --days 1 >/dev/null; }
# One small transaction in another database ends the range: when the writes fill a binlog file,
# the server starts the next one after them and SHOW MASTER STATUS points past its header, where
# no transaction ends, and the reader would wait there for ever.
my "CREATE DATABASE IF NOT EXISTS bench_end; CREATE TABLE IF NOT EXISTS bench_end.mark (id int PRIMARY KEY) ENGINE=InnoDB"
end_range() { my "REPLACE INTO bench_end.mark VALUES (1)"; }
from=$(my "SHOW MASTER STATUS" | awk '{print $1":"$2}')
echo "writing $rows obs rows"
for start in $(seq 0 100000 $((rows - 1))); do
  my "INSERT INTO bench_decode.obs (person_id, concept_id, encounter_id, obs_datetime, value_numeric, value_text, value_coded, date_created, uuid)
      SELECT 1 + seq % 5000, 5089, 1 + seq % 20000, '2026-01-05 10:00:00', seq / 10, CONCAT('Zoë ', seq), 1065, NOW(), CONCAT('b-', $start + seq)
      FROM bench_decode.seq_1_to_$(( rows - start < 100000 ? rows - start : 100000 ))"
done
end_range
to=$(my "SHOW MASTER STATUS" | awk '{print $1":"$2}')
target/release/examples/bench_decode "$EMR_MYSQL_URL" bench_decode "$from" "$to"
my "DROP DATABASE bench_decode; DROP DATABASE bench_end"
