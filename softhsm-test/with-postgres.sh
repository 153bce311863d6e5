#!/usr/bin/env bash
# with-postgres.sh CMD [ARGS...] runs CMD with a throwaway PostgreSQL server: initdb in a new
# temporary directory, as an unprivileged user (nobody, when run as root), listening only on a
# Unix socket in that directory (listen_addresses=''), with $P11ESCROW_TEST_PG naming it. With
# PG_DURABLE=1 it keeps PostgreSQL's durability settings (fsync, synchronous commit). The
# server is stopped and the directory removed when CMD ends, also on failure or interruption.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "with-postgres.sh: PostgreSQL is not installed (softhsm-test/deps.sh installs it)" >&2
  exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/p11escrow-pg.XXXXXX")
as=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root. setpriv execs, so the server stays this script's child.
  chown nobody "$dir"
  as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi

pid=
stop() {
  # The server is this script's own child: a fast shutdown, then wait, which also reaps it, so
  # that no postgres process (not even a zombie) outlives the script.
  if [ -n "$pid" ]; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

(cd "$dir" && "${as[@]}" "$bin/initdb" -D "$dir/data" -U p11escrow --auth=trust -E UTF8 --no-sync) >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
# Throwaway: no TCP, the socket in $dir only, and no durability unless PG_DURABLE=1 (which the
# benchmarks set, so that a commit costs what it costs a real server: a WAL flush).
durability=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
[ "${PG_DURABLE:-}" = 1 ] && durability=()
(cd "$dir" && exec "${as[@]}" "$bin/postgres" -D "$dir/data" -c listen_addresses='' -k "$dir" \
  "${durability[@]}" -c max_connections=200) >"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  [ -S "$dir/.s.PGSQL.5432" ] && "$bin/pg_isready" -q -h "$dir" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! "$bin/pg_isready" -q -h "$dir"; then
  echo "with-postgres.sh: the server did not start:" >&2
  cat "$dir/server.log" >&2
  exit 1
fi

export P11ESCROW_TEST_PG="postgres://p11escrow@/postgres?host=$dir"
"$@"
