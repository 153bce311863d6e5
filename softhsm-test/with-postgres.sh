#!/usr/bin/env bash
# with-postgres.sh CMD [ARGS...] runs CMD with a throwaway PostgreSQL server: initdb in a new
# temporary directory, as an unprivileged user (nobody, when run as root), listening only on a
# Unix socket in that directory (listen_addresses=''), with $P11ESCROW_TEST_PG naming it. The
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
  # PostgreSQL refuses to run as root.
  chown nobody "$dir"
  as=(runuser -u nobody --)
fi
pg() { (cd "$dir" && "${as[@]}" "$@"); }

stop() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

pg "$bin/initdb" -D "$dir/data" -U p11escrow --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
# Throwaway: no durability, no TCP, the socket in $dir only.
pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses='' -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null || {
  cat "$dir/server.log" >&2
  exit 1
}

export P11ESCROW_TEST_PG="postgres://p11escrow@/postgres?host=$dir"
"$@"
