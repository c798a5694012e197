#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: loopback only, data in a temp dir, run as an
# unprivileged user (initdb refuses root).
#   .ci/postgres.sh start DIR PORT   prints the URL (postgresql://..., driver psycopg) on stdout
#   .ci/postgres.sh stop DIR
set -euo pipefail
cmd=$1 dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/pg_ctl" ] || { echo "postgres.sh: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }
as_user() {  # the cluster belongs to 'postgres' (the Debian package's user) when run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
  start)
    port=$3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_user "$bin/initdb" -D "$dir/data" -U dmlkit --auth=trust -E UTF8 >"$dir/initdb.log"
    as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=50" >/dev/null
    as_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U dmlkit dmlkit
    echo "postgresql://dmlkit@127.0.0.1:$port/dmlkit"
    ;;
  stop)
    as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
