#!/usr/bin/env bash
# Private MariaDB (row-based binlog) and PostgreSQL for the demo and the tests.
#
#   scripts/services.sh start    start both (idempotent; installs the servers with apt if missing)
#   scripts/services.sh stop     stop both
#   scripts/services.sh status   say what runs
#   scripts/services.sh env      print the connection URLs to export:  eval "$(scripts/services.sh env)"
#   scripts/services.sh certs    make the private CA and certificates under .services/tls (start
#                                does it too): ca.pem signs server.pem (localhost, 127.0.0.1);
#                                for the tests of refusals, wrong-host.pem (another name),
#                                expired.pem (expired in 2020) and other-ca.pem (a CA that
#                                signed none of them)
#   scripts/services.sh browser  install Chromium and ChromeDriver with apt if missing (the
#                                status-page tests drive them; the demo does not need them)
#   scripts/services.sh sweep    drop the databases earlier test runs left (named as the tests'
#                                `unique()` names them: prefix_pid_nanos, maybe a _suffix);
#                                scripts/test.sh runs it first, so runs do not pile up on disk
#   scripts/services.sh prometheus  install Prometheus (with promtool) with apt if missing (the
#                                ops tests run promtool on the alert rules and start a private
#                                Prometheus; nothing here starts the system one)
#
# Each has its own data directory under .services/ (git-ignored) and its own port, so nothing
# clashes with a system MariaDB or PostgreSQL. Override with EMR_SERVICES_DIR, EMR_MYSQL_PORT,
# EMR_PG_PORT.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${EMR_SERVICES_DIR:-$root/.services}
mysql_port=${EMR_MYSQL_PORT:-23306}
minimal_port=${EMR_MYSQL_MINIMAL_PORT:-23307}
pg_port=${EMR_PG_PORT:-25432}
pg_dir=$dir/postgres

say() { printf 'services: %s\n' "$*" >&2; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_pg() { # PostgreSQL refuses to run as root: run its tools as the postgres user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do [ -x "$b/pg_ctl" ] && { echo "$b"; return; }; done
  command -v pg_ctl >/dev/null && dirname "$(command -v pg_ctl)" && return
  return 1
}

install_missing() {
  local pkgs=()
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || pkgs+=(mariadb-server mariadb-client)
  pg_bin >/dev/null || pkgs+=(postgresql)
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then say "missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]}) or run as root"; exit 1; fi
    say "installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
}

install_browser() {
  local pkgs=()
  [ -x /usr/bin/chromium ] || pkgs+=(chromium)
  [ -x /usr/bin/chromedriver ] || pkgs+=(chromium-driver)
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then say "missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]}) or run as root"; exit 1; fi
    say "installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  say "browser: $(/usr/bin/chromium --version 2>/dev/null | head -1), $(/usr/bin/chromedriver --version | head -1)"
}

install_prometheus() {
  if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
    if [ "$(id -u)" != 0 ]; then say "missing prometheus: install it (apt-get install prometheus) or run as root"; exit 1; fi
    say "installing prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # The package's postinst may try to start its service: harmless without systemd, and
    # the tests start their own Prometheus on a free port.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  say "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -1)"
}

# Two MariaDB instances: "mariadb" logs FULL row metadata (column names in the binlog, as the
# tailer prefers); "mariadb-minimal" logs MINIMAL (as MySQL 5.7 or a default MariaDB would), for
# the tests of the information_schema fallback.
mysql_cli() { mariadb --protocol=socket -S "$1/mysqld.sock" -uroot "${@:2}"; }
mysql_up() { [ -S "$1/mysqld.sock" ] && mysql_cli "$1" -e 'select 1' >/dev/null 2>&1; }
pg_up() { [ -d "$pg_dir/data" ] && as_pg "$(pg_bin)/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; }

start_mysql() { # name port metadata buffer-pool
  local name=$1 port=$2 metadata=$3 pool=$4 my_dir=$dir/$1
  if mysql_up "$my_dir"; then say "$name already running on port $port"; return; fi
  port_taken "$port" && { say "port $port is taken by another process: stop it, or choose another with EMR_MYSQL_PORT / EMR_MYSQL_MINIMAL_PORT"; exit 1; }
  mkdir -p "$my_dir"
  local user_args=()
  [ "$(id -u)" = 0 ] && user_args=(--user=root)
  if [ ! -d "$my_dir/data/mysql" ]; then
    say "initialising $name in $my_dir/data"
    mariadb-install-db --no-defaults "${user_args[@]}" --datadir="$my_dir/data" \
      --auth-root-authentication-method=normal --skip-test-db >"$my_dir/install.log" 2>&1 \
      || { cat "$my_dir/install.log" >&2; exit 1; }
  fi
  # Row-based binlog with full images: what the tailer needs (DESIGN.md).
  setsid mariadbd --no-defaults "${user_args[@]}" --datadir="$my_dir/data" \
    --port="$port" --bind-address=127.0.0.1 --socket="$my_dir/mysqld.sock" \
    --pid-file="$my_dir/mysqld.pid" --log-error="$my_dir/error.log" \
    --server-id=1 --log-bin="$my_dir/data/binlog" --binlog-format=ROW \
    --binlog-row-image=FULL --binlog-row-metadata="$metadata" --max-binlog-size=64M \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --innodb-buffer-pool-size="$pool" --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
    --max-connections=500 --skip-name-resolve --log-bin-trust-function-creators=1 \
    --ssl-ca="$dir/tls/ca.pem" --ssl-cert="$dir/tls/server.pem" --ssl-key="$dir/tls/server.key" \
    </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 60); do mysql_up "$my_dir" && break; sleep 0.5; done
  mysql_up "$my_dir" || { say "$name did not start; see $my_dir/error.log"; tail -20 "$my_dir/error.log" >&2; exit 1; }
  # emr_tls may only connect over TLS (the tests of encrypted links use it).
  mysql_cli "$my_dir" -e "CREATE USER IF NOT EXISTS 'emr'@'%' IDENTIFIED BY 'emr';
                GRANT ALL PRIVILEGES ON *.* TO 'emr'@'%' WITH GRANT OPTION;
                CREATE USER IF NOT EXISTS 'emr_tls'@'%' IDENTIFIED BY 'emr' REQUIRE SSL;
                GRANT ALL PRIVILEGES ON *.* TO 'emr_tls'@'%';
                FLUSH PRIVILEGES;"
  say "$name running on 127.0.0.1:$port (binlog_row_metadata=$metadata)"
}

start_pg() {
  if pg_up; then say "postgresql already running on port $pg_port"; return; fi
  port_taken "$pg_port" && { say "port $pg_port is taken by another process: stop it, or choose another with EMR_PG_PORT"; exit 1; }
  local bin; bin=$(pg_bin)
  mkdir -p "$pg_dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    say "initialising postgresql in $pg_dir/data"
    as_pg "$bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log" 2>&1 \
      || as_pg "$bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 \
      || { cat "$pg_dir/initdb.log" >&2; exit 1; }
  fi
  # TLS on, with the private CA's server certificate (PostgreSQL wants its key private to it);
  # emr_tls may only connect over TLS.
  mkdir -p "$pg_dir/tls"
  cp "$dir/tls/server.pem" "$dir/tls/server.key" "$dir/tls/ca.pem" "$pg_dir/tls/"
  chmod 600 "$pg_dir/tls/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$pg_dir/tls"
  if ! grep -q emr_tls "$pg_dir/data/pg_hba.conf"; then
    { printf 'hostnossl all emr_tls all reject\nhostssl all emr_tls all scram-sha-256\n'; cat "$pg_dir/data/pg_hba.conf"; } >"$pg_dir/hba.tmp"
    cat "$pg_dir/hba.tmp" >"$pg_dir/data/pg_hba.conf"; rm -f "$pg_dir/hba.tmp"
  fi
  as_pg "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c ssl=on -c ssl_cert_file=$pg_dir/tls/server.pem -c ssl_key_file=$pg_dir/tls/server.key" \
    start >/dev/null || { tail -20 "$pg_dir/server.log" >&2; exit 1; }
  as_pg "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qAt -c \
    "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'emr') THEN CREATE ROLE emr LOGIN SUPERUSER PASSWORD 'emr'; END IF;
     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'emr_tls') THEN CREATE ROLE emr_tls LOGIN SUPERUSER PASSWORD 'emr'; END IF; END \$\$;" >/dev/null
  as_pg "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname='emr'" | grep -q 1 \
    || as_pg "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE emr OWNER emr" >/dev/null
  say "postgresql running on 127.0.0.1:$pg_port"
}

# A private CA and certificates signed by it (EC P-256 keys; openssl from Debian).
make_certs() {
  local t=$dir/tls
  [ -f "$t/expired.pem" ] && return
  command -v openssl >/dev/null || { say "openssl is missing: apt-get install openssl"; exit 1; }
  mkdir -p "$t"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -keyout "$t/$ca.key" -out "$t/$ca.pem" -days 3650 \
      -subj "/CN=emr-stream private $ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  local name san
  for name in server wrong-host expired; do
    san="DNS:localhost,IP:127.0.0.1"
    [ "$name" = wrong-host ] && san="DNS:wrong.example"
    openssl req "${ec[@]}" -keyout "$t/$name.key" -out "$t/$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$t/$name.ext"
    [ "$name" = expired ] && continue
    openssl x509 -req -in "$t/$name.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
      -days 825 -extfile "$t/$name.ext" -out "$t/$name.pem" 2>/dev/null
  done
  # openssl x509 cannot backdate a certificate; openssl ca can.
  : >"$t/index.txt"; echo 1000 >"$t/serial"
  printf '[ca]\ndefault_ca = private\n[private]\ndatabase = %s\nnew_certs_dir = %s\nserial = %s\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n[leaf]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n' \
    "$t/index.txt" "$t" "$t/serial" >"$t/ca.cnf"
  openssl ca -batch -config "$t/ca.cnf" -cert "$t/ca.pem" -keyfile "$t/ca.key" -notext \
    -startdate 20200101000000Z -enddate 20200102000000Z -extensions leaf \
    -in "$t/expired.csr" -out "$t/expired.pem" 2>/dev/null
  chmod 600 "$t"/*.key
  say "private CA and certificates in $t"
}

# The names tests/common's unique() gives, with the _src / _mirror suffixes some tests add.
test_db='^[a-z0-9_]+_[0-9]+_[0-9]+(_[a-z]+)?$'

sweep_test_databases() {
  local name db n=0
  for name in mariadb mariadb-minimal; do
    mysql_up "$dir/$name" || continue
    for db in $(mysql_cli "$dir/$name" -N -e 'SHOW DATABASES' | grep -E "$test_db" || true); do
      mysql_cli "$dir/$name" -e "DROP DATABASE \`$db\`"; n=$((n + 1))
    done
  done
  if pg_up; then
    local psql; psql=$(pg_bin)/psql
    for db in $(as_pg "$psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qAt -c "SELECT datname FROM pg_database" | grep -E "$test_db" || true); do
      as_pg "$psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null; n=$((n + 1))
    done
  fi
  say "dropped $n databases earlier test runs left"
}

stop_all() {
  local name
  for name in mariadb mariadb-minimal; do
    if [ -f "$dir/$name/mysqld.pid" ]; then
      local pid; pid=$(cat "$dir/$name/mysqld.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      rm -f "$dir/$name/mysqld.pid"
      say "$name stopped"
    fi
  done
  if pg_up; then as_pg "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; say "postgresql stopped"; fi
}

case "${1:-}" in
  start)
    make_certs
    install_missing
    start_mysql mariadb "$mysql_port" FULL 256M
    start_mysql mariadb-minimal "$minimal_port" MINIMAL 64M
    start_pg ;;
  stop) stop_all ;;
  sweep) sweep_test_databases ;;
  certs) make_certs ;;
  browser) install_browser ;;
  prometheus) install_prometheus ;;
  status)
    if mysql_up "$dir/mariadb"; then echo "mariadb: running on 127.0.0.1:$mysql_port"; else echo "mariadb: stopped"; fi
    if mysql_up "$dir/mariadb-minimal"; then echo "mariadb-minimal: running on 127.0.0.1:$minimal_port"; else echo "mariadb-minimal: stopped"; fi
    if pg_bin >/dev/null && pg_up; then echo "postgresql: running on 127.0.0.1:$pg_port"; else echo "postgresql: stopped"; fi ;;
  env)
    echo "export EMR_MYSQL_URL=mysql://emr:emr@127.0.0.1:$mysql_port"
    echo "export EMR_MYSQL_MINIMAL_URL=mysql://emr:emr@127.0.0.1:$minimal_port"
    echo "export EMR_PG_URL=postgres://emr:emr@127.0.0.1:$pg_port/emr"
    echo "export EMR_TLS_DIR=$dir/tls"
    # The same servers as a user that may only connect over TLS (verified with EMR_TLS_DIR/ca.pem).
    echo "export EMR_MYSQL_TLS_URL=mysql://emr_tls:emr@127.0.0.1:$mysql_port"
    echo "export EMR_PG_TLS_URL=postgres://emr_tls:emr@127.0.0.1:$pg_port/emr" ;;
  *) echo "usage: $0 start|stop|status|env|certs|browser|prometheus|sweep" >&2; exit 2 ;;
esac
