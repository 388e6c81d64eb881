# Services for CI; SOURCED by .ci/run after scripts/setup.sh (so exports reach pytest). Append new blocks below;
# each block must be idempotent and must not exit the shell (it is sourced under `set -euo pipefail`).

# --- lego study: a throwaway PostgreSQL server on loopback only, for tests/study (storage + load tests).
# Exports LEGO_STUDY_TEST_PG_URL; the PostgreSQL tests are skipped (with a message) when it is unset.
lego_study_start_postgres() {
  local port="${LEGO_STUDY_PG_PORT:-54329}" dir="${LEGO_STUDY_PG_DIR:-/tmp/lego-study-pg}" bin initdb run=()
  initdb=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$initdb" ]; then echo "ci_services: PostgreSQL not installed; PostgreSQL tests will be skipped" >&2; return 0; fi
  bin=$(dirname "$(readlink -f "$initdb")")
  if [ "$(id -u)" -eq 0 ]; then run=(runuser -u postgres --); fi   # PostgreSQL refuses to run as root
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"; [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
      "${run[@]}" "$initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" start >/dev/null
  fi
  "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='lego_study_test'" \
    | grep -q 1 || "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres lego_study_test
  export LEGO_STUDY_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/lego_study_test"
  echo "ci_services: PostgreSQL for the study tests at $LEGO_STUDY_TEST_PG_URL"
}
lego_study_start_postgres
