# shellcheck shell=bash
# PostgreSQL for the multi-node tests (sourced by scripts/cluster; or by hand:
# `source scripts/cluster.d/postgres.sh && postgres_up && eval "$(postgres_env)"`).
#
#   pg1   127.0.0.1:5441   primary at start
#   pg2   127.0.0.1:5442   streaming replica of pg1 at start (pg_basebackup -R, slot "pg2")
#
# Functions (the contract of scripts/cluster): postgres_up, postgres_down, postgres_status,
# postgres_kill NODE, postgres_start NODE, postgres_env, postgres_nodes, postgres_ctl NODE ARGS
# (psql); and postgres_promote NODE (pg_ctl promote), postgres_rebuild NODE (wipe NODE and make
# it the replica of the other node, the primary). NODE is pg1, pg2, or pg-primary / pg-replica:
# the node in that role now (for postgres_start, the one the last postgres_kill of that name
# killed). Everything lives under ${CLUSTER_DIR:-${BOTD_CLUSTER_DIR:-/tmp/botd-cluster}}/pg
# (data directories, logs, sockets), owned by the `postgres` user: PostgreSQL refuses to run as
# root. The main PostgreSQL (5432) is never touched. Sourcing only defines functions (no set -e,
# nothing runs); progress goes to stderr, stdout carries status lines and env's exports.
#
# Replication is synchronous: the primary answers a commit only once its stand-by has flushed
# it, so an order botd was told is committed is on the stand-by too and a promotion loses none.
# After a promotion the new primary runs alone (it would block every write waiting for a dead
# stand-by) until `postgres_rebuild OLD` makes the old primary its synchronous replica again.
# Trust authentication on loopback, replication included: a test cluster, never a real one.

_pg_bin() {  # the newest installed PostgreSQL's binaries (Debian keeps them off PATH)
  local bin=${BOTD_CLUSTER_PG_BIN:-}
  if [ -z "$bin" ]; then
    bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
  fi
  echo "${bin:-/usr/lib/postgresql/15/bin}"
}

_pg_root() {  # absolute: the postgres user runs the nodes from their own directories
  local base=${CLUSTER_DIR:-${BOTD_CLUSTER_DIR:-/tmp/botd-cluster}}
  case "$base" in /*) ;; *) base="$PWD/$base" ;; esac
  echo "$base/pg"
}

_pg_data() { echo "$(_pg_root)/$1"; }

_pg_port() {
  case $1 in
    pg1) echo 5441 ;;
    pg2) echo 5442 ;;
    *) echo "postgres: unknown node '$1' (nodes: pg1 pg2 pg-primary pg-replica)" >&2; return 2 ;;
  esac
}

postgres_nodes() { echo "pg1 pg2 pg-primary pg-replica"; }

_pg_other() { if [ "$1" = pg1 ]; then echo pg2; else echo pg1; fi; }

# PostgreSQL refuses to run as root: the cluster's files and processes belong to `postgres`.
_pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_pg_sql() {  # _pg_sql NODE SQL [DB]: one value per line, nothing else
  local port
  port=$(_pg_port "$1") || return
  "$(_pg_bin)/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres \
    -d "${3:-postgres}" -c "$2"
}

_pg_answers() {  # the node accepts connections
  local port
  port=$(_pg_port "$1") || return
  "$(_pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2
}

_pg_is_primary() { [ "$(_pg_sql "$1" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; }

_pg_postmaster_pid() {  # the node's postmaster pid when it runs, else nothing (status 1)
  local pidfile pid
  pidfile="$(_pg_data "$1")/postmaster.pid"
  [ -f "$pidfile" ] || return 1
  pid=$(head -n1 "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ! _pg_dead "$pid" || return 1
  echo "$pid"
}

_pg_dead() {  # gone, or a zombie nobody reaped yet (pg_ctl's daemon has no waiting parent)
  ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

_pg_no_leftovers() {  # no process of the node is left (process titles carry cluster_name)
  ! pgrep -u postgres -f "^postgres: $1: " >/dev/null
}

_pg_wait() {  # _pg_wait SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "postgres: timed out after ${seconds}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

_pg_streaming() {  # _pg_streaming PRIMARY REPLICA [sync]: the replica streams (synchronously)
  local row
  row=$(_pg_sql "$1" "SELECT state || ' ' || sync_state FROM pg_stat_replication
                      WHERE application_name = '$2'") || return
  case $row in
    "streaming ${3:-}"*) return 0 ;;
    *) return 1 ;;
  esac
}

_pg_node() {  # _pg_node NODE [kill|start]: the node name, an alias resolved
  local node=$1 n
  case $node in
    pg-primary | pg-replica)
      if [ "${2:-}" = start ]; then
        n=$(cat "$(_pg_root)/$node.last" 2>/dev/null || true)
      else
        for n in pg1 pg2; do
          if _pg_answers "$n"; then
            if _pg_is_primary "$n"; then [ "$node" = pg-primary ] && break
            else [ "$node" = pg-replica ] && break; fi
          fi
          n=
        done
      fi
      [ -n "$n" ] || { echo "postgres: no node is $node now" >&2; return 1; }
      echo "$n"
      ;;
    *) _pg_port "$node" >/dev/null && echo "$node" ;;
  esac
}

_pg_write_conf() {  # _pg_write_conf NODE: this node's own settings, after the copied ones
  local node=$1 data
  data=$(_pg_data "$node")
  # Later lines win: a replica made by pg_basebackup inherits its primary's file, so every
  # node-specific value is (re)stated here. synchronous_standby_names stays empty in the file:
  # a primary gets it by ALTER SYSTEM once its stand-by streams (_pg_make_sync).
  _pg_as tee -a "$data/postgresql.conf" >/dev/null <<EOF

# ---- botd test cluster: node $node ----
listen_addresses = '127.0.0.1'
port = $(_pg_port "$node")
# not in the data directory, which pg_basebackup copies
unix_socket_directories = '$(_pg_root)'
cluster_name = '$node'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
# A stand-by waiting for WAL retries this often, and PostgreSQL 15 finishes a promotion only
# after that wait: the default 5 s would be added to a promotion after the primary's loss.
wal_retrieve_retry_interval = '500ms'
hot_standby = on
wal_log_hints = on
max_connections = 60
shared_buffers = 32MB
synchronous_standby_names = ''
log_line_prefix = '%m [%p] $node '
EOF
  _pg_as tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# botd test cluster: trust on loopback, replication included (a test cluster, never a real one)
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
EOF
}

_pg_ctl_start() {
  local node=$1
  # a killed postmaster's children may still hold its shared memory for a moment
  _pg_wait 20 "$node's old processes to exit" _pg_no_leftovers "$node" || return
  _pg_as "$(_pg_bin)/pg_ctl" -D "$(_pg_data "$node")" -l "$(_pg_root)/$node.log" -w -t 60 \
    start >/dev/null ||
    { echo "postgres: $node did not start; see $(_pg_root)/$node.log" >&2; return 1; }
}

_pg_make_replica() {  # _pg_make_replica NODE PRIMARY: a fresh copy of PRIMARY, streaming from it
  local node=$1 primary=$2
  _pg_sql "$primary" "SELECT pg_create_physical_replication_slot('$node')
                      WHERE NOT EXISTS (SELECT FROM pg_replication_slots
                                        WHERE slot_name = '$node')" >/dev/null || return
  # -R writes standby.signal and primary_conninfo (with application_name: the name the primary
  # knows the stand-by by in synchronous_standby_names); -S streams through the slot.
  _pg_as "$(_pg_bin)/pg_basebackup" -D "$(_pg_data "$node")" -R -S "$node" -X stream -c fast \
    -d "host=127.0.0.1 port=$(_pg_port "$primary") user=postgres application_name=$node" ||
    return
  _pg_write_conf "$node"
  _pg_ctl_start "$node" || return
  _pg_wait 60 "$node to stream from $primary" _pg_streaming "$primary" "$node"
}

_pg_make_sync() {  # _pg_make_sync PRIMARY REPLICA: commits on PRIMARY wait for REPLICA's flush
  _pg_sql "$1" "ALTER SYSTEM SET synchronous_standby_names = '$2'" >/dev/null &&
    _pg_sql "$1" "SELECT pg_reload_conf()" >/dev/null &&
    _pg_wait 30 "$2 to be $1's synchronous stand-by" _pg_streaming "$1" "$2" sync
}

postgres_up() {  # idempotent: a fresh cluster, or the stopped nodes of an existing one started
  local root node primary=""
  root=$(_pg_root)
  if [ ! -d "$root/pg1" ] && [ ! -d "$root/pg2" ]; then
    echo "postgres: creating pg1 (primary) and pg2 (replica) in $root" >&2
    mkdir -p "$root" && chown postgres: "$root" || return
    _pg_as "$(_pg_bin)/initdb" -D "$root/pg1" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      --no-instructions >"$root/initdb.log" 2>&1 ||
      { echo "postgres: initdb failed; see $root/initdb.log" >&2; return 1; }
    _pg_write_conf pg1
    _pg_ctl_start pg1 || return
    _pg_make_replica pg2 pg1 || return
    _pg_make_sync pg1 pg2 || return
  else
    for node in pg1 pg2; do  # the primary first: the replica then streams at once
      [ -f "$root/$node/standby.signal" ] && continue
      [ -d "$root/$node" ] && { postgres_start "$node" || return; primary=$node; break; }
    done
    [ -n "$primary" ] || { echo "postgres: no primary's data in $root; postgres_down" >&2; return 1; }
    node=$(_pg_other "$primary")
    if [ -d "$root/$node" ]; then postgres_start "$node" || return
    else _pg_make_replica "$node" "$primary" && _pg_make_sync "$primary" "$node" || return; fi
  fi
  primary=$(_pg_node pg-primary) || return
  if [ -z "$(_pg_sql "$primary" "SELECT 1 FROM pg_database WHERE datname = 'botd'")" ]; then
    _pg_sql "$primary" "CREATE DATABASE botd" || return
  fi
  echo "postgres: up (primary $primary, synchronous replica $(_pg_other "$primary"))" >&2
}

postgres_down() {
  local node root
  root=$(_pg_root)
  for node in pg1 pg2; do
    if _pg_postmaster_pid "$node" >/dev/null; then
      _pg_as "$(_pg_bin)/pg_ctl" -D "$(_pg_data "$node")" -m immediate -w -t 60 stop >/dev/null
    fi
  done
  rm -rf "$root"
  echo "postgres: down ($root removed)" >&2
}

postgres_status() {  # one line per node; returns 1 if any node is down
  local node port pid role down=0
  for node in pg1 pg2; do
    port=$(_pg_port "$node")
    if ! pid=$(_pg_postmaster_pid "$node"); then
      echo "$node 127.0.0.1:$port down"
      down=1
      continue
    fi
    if ! _pg_answers "$node"; then
      role="not answering"
      down=1
    elif _pg_is_primary "$node"; then
      role="primary, replicas: $(_pg_sql "$node" "SELECT coalesce(string_agg(application_name
        || ' ' || state || ' ' || sync_state, ', '), 'none') FROM pg_stat_replication")"
    else
      role=$(_pg_sql "$node" 'SELECT status FROM pg_stat_wal_receiver')
      role="replica (${role:-not streaming: no primary to stream from})"
    fi
    echo "$node 127.0.0.1:$port up pid $pid $role"
  done
  return "$down"
}

postgres_kill() {  # kill -9 of the node's postmaster (its children exit on their own)
  local node pid at
  node=$(_pg_node "${1:?postgres_kill NODE}" kill) || return
  case $1 in pg-*) echo "$node" >"$(_pg_root)/$1.last" ;; esac
  pid=$(_pg_postmaster_pid "$node") || { echo "postgres: $node is not running" >&2; return 1; }
  kill -9 "$pid" && at=$(date +%s.%N)
  _pg_wait 10 "$node's postmaster to die" _pg_dead "$pid" || return
  # the time (Unix, just after the signal) tells a test which orders were made afterwards
  echo "postgres: $node killed (postmaster $pid, SIGKILL at $at)"
}

postgres_start() {  # start NODE again; a replica returns once it streams
  local node other
  node=$(_pg_node "${1:?postgres_start NODE}" start) || return
  other=$(_pg_other "$node")
  if ! _pg_postmaster_pid "$node" >/dev/null; then
    # An old primary started as it is after its stand-by was promoted is a second primary
    # (split brain): a client listing it first in a multi-host DSN would write there.
    if [ ! -f "$(_pg_data "$node")/standby.signal" ] && _pg_is_primary "$other" &&
      [ "${BOTD_CLUSTER_FORCE:-}" != 1 ]; then
      echo "postgres: refusing to start $node as a second primary ($other is primary);" \
        "postgres_rebuild $node makes it $other's replica (BOTD_CLUSTER_FORCE=1 overrides)" >&2
      return 1
    fi
    _pg_ctl_start "$node" || return
    echo "postgres: $node started" >&2
  fi
  if [ -f "$(_pg_data "$node")/standby.signal" ] && _pg_answers "$other"; then
    _pg_wait 60 "$node to stream from $other" _pg_streaming "$other" "$node"
  fi
}

postgres_promote() {  # make a replica the primary (pg_ctl promote -w: until it takes writes)
  local node
  node=$(_pg_node "${1:?postgres_promote NODE}") || return
  _pg_as "$(_pg_bin)/pg_ctl" -D "$(_pg_data "$node")" -w -t 60 promote >/dev/null || return
  echo "postgres: $node promoted" >&2
}

postgres_rebuild() {  # postgres_rebuild NODE: wipe NODE, make it the replica of the primary
  local node primary
  node=$(_pg_node "${1:?postgres_rebuild NODE}" start) || return
  primary=$(_pg_other "$node")
  _pg_is_primary "$primary" ||
    { echo "postgres: $primary is not a running primary; promote it first" >&2; return 1; }
  if _pg_postmaster_pid "$node" >/dev/null; then
    _pg_as "$(_pg_bin)/pg_ctl" -D "$(_pg_data "$node")" -m fast -w -t 60 stop >/dev/null || return
  fi
  _pg_wait 20 "$node's old processes to exit" _pg_no_leftovers "$node" || return
  rm -rf "$(_pg_data "$node")"
  _pg_make_replica "$node" "$primary" || return
  _pg_make_sync "$primary" "$node" || return
  echo "postgres: $node rebuilt as the synchronous replica of $primary" >&2
}

postgres_ctl() {  # postgres_ctl NODE [PSQL ARGS]: psql on NODE's botd database
  local node
  node=$(_pg_node "${1:?postgres_ctl NODE [PSQL ARGS]}") || return
  shift
  "$(_pg_bin)/psql" -X -h 127.0.0.1 -p "$(_pg_port "$node")" -U postgres -d botd "$@"
}

postgres_env() {
  echo "export BOTD_POSTGRES_DSN='postgresql://postgres@127.0.0.1:5441,127.0.0.1:5442/botd?target_session_attrs=read-write'"
}
