# Sourced by scripts/test.sh: makes sure a PostgreSQL server is there for the PostgreSQL store's
# tests and exports its admin URL as JUNCTION_TEST_POSTGRES (each test creates its own database
# on it).
#
# In order: the URL already in JUNCTION_TEST_POSTGRES if it answers; else a local server on
# 127.0.0.1:5432 (user postgres, trust) if one answers; else a throw-away cluster in a temporary
# directory on a free port, stopped and deleted when the calling script exits. PostgreSQL's
# programs are installed from Debian's packages when they are missing (needs root and apt-get).
# JUNCTION_TEST_POSTGRES=start skips straight to the throw-away cluster.

pg_answers() {
  command -v psql >/dev/null && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

pg_bindir() {
  local initdb
  initdb=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$initdb" ] && dirname "$initdb"
}

pg_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "scripts/postgres.sh: PostgreSQL is not installed and cannot be installed here (needs root and apt-get); set JUNCTION_TEST_POSTGRES to a server's URL" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
}

pg_start_throwaway() {
  local bindir dir port owner
  bindir=$(pg_bindir) || { pg_install && bindir=$(pg_bindir); } || return 1
  command -v psql >/dev/null || pg_install || return 1
  dir=$(mktemp -d /tmp/junction-pg.XXXXXX)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # initdb refuses to run as root: the cluster belongs to the postgres user when there is one.
  owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
    owner=postgres
    chown "$owner" "$dir"
  fi
  local as_owner=()
  [ "$owner" = "$(id -un)" ] || as_owner=(runuser -u "$owner" --)
  "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" >/dev/null
  JUNCTION_PG_THROWAWAY="$dir"
  # shellcheck disable=SC2064 # expanded now, on purpose: these locals are gone at exit
  trap "${as_owner[*]} '$bindir/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1; rm -rf '$dir'" EXIT
  export JUNCTION_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "scripts/postgres.sh: started a throw-away PostgreSQL at $JUNCTION_TEST_POSTGRES"
}

if [ "${JUNCTION_TEST_POSTGRES:-}" != start ] && [ -n "${JUNCTION_TEST_POSTGRES:-}" ] \
  && pg_answers "$JUNCTION_TEST_POSTGRES"; then
  :
elif [ "${JUNCTION_TEST_POSTGRES:-}" != start ] \
  && pg_answers "postgres://postgres@127.0.0.1:5432/postgres"; then
  export JUNCTION_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432/postgres"
else
  pg_start_throwaway
fi

# Databases left by earlier runs on a server that outlives them (named junction_test_PID_…;
# those of a test process still running are kept).
if [ -z "${JUNCTION_PG_THROWAWAY:-}" ]; then
  psql "$JUNCTION_TEST_POSTGRES" -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'junction\_test\_%'" 2>/dev/null |
    while read -r stale; do
      pid=${stale#junction_test_}
      pid=${pid%%_*}
      kill -0 "$pid" 2>/dev/null && continue
      psql "$JUNCTION_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS \"$stale\"" >/dev/null 2>&1 || true
    done
fi
