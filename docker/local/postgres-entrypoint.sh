#!/bin/sh
# Entrypoint of the local PostgreSQL image (docker/local/base-images.sh): Debian's
# postgresql package, started the way the official postgres image is configured. It honours
# POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default the
# user) and PGDATA: on an empty data directory it runs initdb with that superuser and
# password and creates the database; then it runs the server on every interface, password
# (scram) authentication over TCP, trust on the local socket (the healthcheck's pg_isready).
set -eu

: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    # UTF8 as the official image has it (a bare container's C locale would give SQL_ASCII,
    # whose text psycopg hands back as bytes)
    as_postgres "$bin/initdb" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        as_postgres "$bin/pg_ctl" --wait --silent -o "-c listen_addresses=''" start
        as_postgres "$bin/createdb" --username="$user" "$db"
        as_postgres "$bin/pg_ctl" --wait --silent --mode=fast stop
    fi
fi

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
[ "$#" -gt 0 ] && shift
# The official image stops PostgreSQL with SIGINT (fast shutdown: clients disconnected, a
# clean checkpoint); `docker stop` sends SIGTERM (smart shutdown, which waits for every client
# until the kill). An import cannot set STOPSIGNAL, so this shell turns one into the other.
as_postgres "$bin/postgres" -c listen_addresses='*' "$@" &
server=$!
trap 'kill -INT "$server"' TERM INT
status=0
wait "$server" || status=$?
while kill -0 "$server" 2>/dev/null; do  # the wait a signal interrupted: wait for the exit
    status=0
    wait "$server" || status=$?
done
exit "$status"
