# shellcheck shell=bash
# Redis with Sentinel for the multi-node tests (sourced by scripts/cluster; or by hand:
# `source scripts/cluster.d/redis.sh; redis_up`).
#
#   redis1    127.0.0.1:6391   primary at start
#   redis2    127.0.0.1:6392   replica of redis1 at start
#   sentinel1-3 127.0.0.1:26391-26393, monitoring service "botd", quorum 2
#
# Down-after 1 s and fail-over timeout 5 s so a fail-over takes seconds, not the production
# 30 s / 3 min: the tests measure botd, not Sentinel's patience. Both data nodes run with
# appendonly yes + appendfsync everysec, like production: a kill -9 can lose up to about a
# second of writes on the node itself, and replication is asynchronous, so a promoted replica
# can miss the last writes its primary acknowledged (docs/operations.md).
#
# Functions (the contract of scripts/cluster): redis_up, redis_down, redis_status,
# redis_kill NODE, redis_start NODE, redis_env, redis_nodes, redis_ctl NODE ARGS. NODE is
# redis1, redis2, sentinel1-3, or redis-primary / redis-replica: the data node the sentinels
# call that now (for redis_start, the one the last redis_kill of that name killed).
# Everything lives under ${CLUSTER_DIR:-${BOTD_CLUSTER_DIR:-/tmp/botd-cluster}}/redis (configs,
# data, logs, pidfiles); processes are only ever stopped through their own pidfiles. The ports
# are not the main Redis (6379), which this never touches. Sourcing only defines functions and
# variables (no set -e, nothing runs); progress goes to stderr, stdout carries status and env.

REDIS_CLUSTER_SERVICE=botd
REDIS_CLUSTER_NODES="redis1 redis2"
REDIS_CLUSTER_SENTINELS="sentinel1 sentinel2 sentinel3"

_redis_dir() {  # absolute: the node configs name their files and the nodes chdir
  local base=${CLUSTER_DIR:-${BOTD_CLUSTER_DIR:-/tmp/botd-cluster}}
  case "$base" in /*) ;; *) base="$PWD/$base" ;; esac
  echo "$base/redis"
}

redis_nodes() { echo "$REDIS_CLUSTER_NODES $REDIS_CLUSTER_SENTINELS"; }

_redis_port() {  # _redis_port NODE
  case "$1" in
    redis1) echo 6391 ;;
    redis2) echo 6392 ;;
    sentinel1) echo 26391 ;;
    sentinel2) echo 26392 ;;
    sentinel3) echo 26393 ;;
    *) return 1 ;;
  esac
}

_redis_known() {  # _redis_known NODE: true for one of this file's nodes
  _redis_port "$1" >/dev/null 2>&1
}

_redis_pid() {  # the pid of NODE if it runs (from its pidfile), else nothing and false
  local file pid
  file="$(_redis_dir)/$1.pid"
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
    return 0
  fi
  return 1
}

_redis_cli() {  # _redis_cli PORT ARGS...
  local port=$1
  shift
  # never fails: callers look at the answer (empty when the node is away), and a sourcing
  # script may run under set -euo pipefail
  redis-cli -h 127.0.0.1 -p "$port" --no-auth-warning "$@" 2>/dev/null || true
}

_redis_wait() {  # _redis_wait SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "redis: timed out after ${seconds}s waiting for $what (logs: $(_redis_dir)/*.log)" >&2
  return 1
}

_redis_pong() { [ "$(_redis_cli "$1" ping)" = "PONG" ]; }

_redis_write_configs() {  # fresh configs and empty data for the whole set
  local dir node port n
  dir=$(_redis_dir)
  for node in $REDIS_CLUSTER_NODES $REDIS_CLUSTER_SENTINELS; do
    rm -rf "${dir:?}/$node"
    mkdir -p "$dir/$node"
  done
  for node in $REDIS_CLUSTER_NODES; do
    port=$(_redis_port "$node")
    {
      echo "port $port"
      echo "bind 127.0.0.1"
      echo "dir $dir/$node"
      echo "daemonize yes"
      echo "pidfile $dir/$node.pid"
      echo "logfile $dir/$node.log"
      echo "save \"\""
      echo "appendonly yes"
      echo "appendfsync everysec"
      echo "replica-serve-stale-data yes"
      if [ "$node" != redis1 ]; then echo "replicaof 127.0.0.1 $(_redis_port redis1)"; fi
    } >"$dir/$node.conf"
  done
  for node in $REDIS_CLUSTER_SENTINELS; do
    port=$(_redis_port "$node")
    n=$REDIS_CLUSTER_SERVICE
    {
      echo "port $port"
      echo "bind 127.0.0.1"
      echo "dir $dir/$node"
      echo "daemonize yes"
      echo "pidfile $dir/$node.pid"
      echo "logfile $dir/$node.log"
      echo "sentinel monitor $n 127.0.0.1 $(_redis_port redis1) 2"
      echo "sentinel down-after-milliseconds $n 1000"
      echo "sentinel failover-timeout $n 5000"
      echo "sentinel parallel-syncs $n 1"
    } >"$dir/$node.conf"  # sentinel rewrites it with what it learns: it must stay writable
  done
}

_redis_master_port() {  # the primary's port as the first answering sentinel reports it
  local node addr
  for node in $REDIS_CLUSTER_SENTINELS; do
    addr=$(_redis_cli "$(_redis_port "$node")" sentinel get-master-addr-by-name "$REDIS_CLUSTER_SERVICE")
    if [ -n "$addr" ]; then
      echo "$addr" | sed -n 2p
      return 0
    fi
  done
  return 1
}

_redis_start_one() {  # _redis_start_one NODE: start it if it does not run (no waiting)
  local node=$1 dir port master
  dir=$(_redis_dir)
  port=$(_redis_port "$node")
  if _redis_pid "$node" >/dev/null; then return 0; fi
  rm -f "$dir/$node.pid"
  if _redis_pong "$port"; then
    echo "redis: 127.0.0.1:$port answers but is not $node (pidfile $dir/$node.pid); refusing" >&2
    return 1
  fi
  case "$node" in
    sentinel*) redis-server "$dir/$node.conf" --sentinel >/dev/null ;;
    *)
      # A data node comes back as the replica of whichever node the sentinels now call the
      # primary, never as a second primary with its own stale data (not even for a second).
      master=$(_redis_master_port || true)
      if [ -n "$master" ] && [ "$master" != "$port" ]; then
        redis-server "$dir/$node.conf" --replicaof 127.0.0.1 "$master" >/dev/null
      elif [ -n "$master" ]; then
        redis-server "$dir/$node.conf" --replicaof no one >/dev/null
      else
        redis-server "$dir/$node.conf" >/dev/null
      fi
      ;;
  esac
}

_redis_sentinels_see_all() {  # every sentinel: the primary up, one replica up, 2 other sentinels
  local node info
  for node in $REDIS_CLUSTER_SENTINELS; do
    info=$(_redis_cli "$(_redis_port "$node")" sentinel master "$REDIS_CLUSTER_SERVICE" | paste -sd' ')
    case " $info " in *" flags master "*) ;; *) return 1 ;; esac
    case " $info " in *" num-slaves 1 "*) ;; *) return 1 ;; esac
    case " $info " in *" num-other-sentinels 2 "*) ;; *) return 1 ;; esac
    _redis_cli "$(_redis_port "$node")" sentinel replicas "$REDIS_CLUSTER_SERVICE" \
      | paste -sd' ' | grep -q " flags slave " || return 1
  done
}

_redis_replica_linked() {  # _redis_replica_linked PORT: a replica whose link to its primary is up
  _redis_cli "$1" info replication | tr -d '\r' | grep -qx 'master_link_status:up'
}

redis_up() {
  local dir node any=""
  dir=$(_redis_dir)
  for node in $REDIS_CLUSTER_NODES $REDIS_CLUSTER_SENTINELS; do
    if _redis_pid "$node" >/dev/null; then any=1; fi
  done
  mkdir -p "$dir"
  if [ -z "$any" ]; then
    _redis_write_configs  # nothing runs: start from scratch (a known primary, no old data)
  fi
  for node in $REDIS_CLUSTER_NODES; do
    _redis_start_one "$node" || return 1
    _redis_wait 20 "$node" _redis_pong "$(_redis_port "$node")" || return 1
  done
  for node in $REDIS_CLUSTER_SENTINELS; do
    _redis_start_one "$node" || return 1
  done
  _redis_wait 30 "the sentinels to see the primary, the replica and each other" \
    _redis_sentinels_see_all || return 1
  echo "redis: primary 127.0.0.1:$(_redis_master_port), sentinels $(redis_env | sed -n 's/.*SENTINELS=//p')" >&2
}

redis_down() {
  local dir node pid i
  dir=$(_redis_dir)
  # sentinels first: a primary going away while they watch would start a fail-over
  for node in $REDIS_CLUSTER_SENTINELS $REDIS_CLUSTER_NODES; do
    if pid=$(_redis_pid "$node"); then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
      done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/$node.pid"
  done
  rm -rf "${dir:?}"
  echo "redis: down, $dir removed" >&2
}

redis_status() {  # one line per node; returns 1 if any node is down
  local node port pid role master down=0
  master=$(_redis_master_port || true)
  for node in $REDIS_CLUSTER_NODES $REDIS_CLUSTER_SENTINELS; do
    port=$(_redis_port "$node")
    if ! pid=$(_redis_pid "$node"); then
      echo "$node 127.0.0.1:$port down"
      down=1
      continue
    fi
    case "$node" in
      sentinel*) role="sentinel (primary of $REDIS_CLUSTER_SERVICE: 127.0.0.1:${master:-?})" ;;
      *) role=$(_redis_cli "$port" info replication | tr -d '\r' | sed -n 's/^role://p') ;;
    esac
    echo "$node 127.0.0.1:$port up pid $pid ${role:-not answering}"
  done
  return "$down"
}

_redis_node() {  # _redis_node NODE [kill|start|ctl]: the node name (an alias resolved), or false
  local node=$1 port n
  case "$node" in
    redis-primary | redis-replica)
      if [ "${2:-}" = start ]; then
        n=$(cat "$(_redis_dir)/$node.last" 2>/dev/null || true)
      else
        port=$(_redis_master_port || true)
        for n in $REDIS_CLUSTER_NODES; do
          if [ "$node" = redis-primary ] && [ "$(_redis_port "$n")" = "$port" ]; then break; fi
          if [ "$node" = redis-replica ] && [ -n "$port" ] && [ "$(_redis_port "$n")" != "$port" ]; then
            break
          fi
          n=""
        done
        if [ -n "$n" ] && [ "${2:-}" = kill ]; then echo "$n" >"$(_redis_dir)/$node.last"; fi
      fi
      node=$n
      ;;
  esac
  if ! _redis_known "$node"; then
    echo "redis: unknown node '$1' ($(redis_nodes), redis-primary, redis-replica)" >&2
    return 2
  fi
  echo "$node"
}

redis_kill() {  # redis_kill NODE: kill -9, nothing else (no fail-over is started by hand)
  local node pid
  node=$(_redis_node "${1:-}" kill) || return 2
  if pid=$(_redis_pid "$node"); then
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "redis: $node (pid $pid) killed" >&2
  else
    echo "redis: $node is not running" >&2
  fi
  rm -f "$(_redis_dir)/$node.pid"
}

redis_start() {  # redis_start NODE: start it again and wait until it serves its role
  local node port role
  node=$(_redis_node "${1:-}" start) || return 2
  port=$(_redis_port "$node")
  _redis_start_one "$node" || return 1
  _redis_wait 20 "$node" _redis_pong "$port" || return 1
  case "$node" in
    redis*)
      if [ "$(_redis_master_port || true)" != "$port" ]; then
        _redis_wait 30 "$node to sync with the primary" _redis_replica_linked "$port" || return 1
      fi
      ;;
  esac
  role=$(_redis_cli "$port" info replication | tr -d '\r' | sed -n 's/^role://p')
  echo "redis: $node started (${role:-sentinel})" >&2
}

redis_env() {
  local node list=""
  for node in $REDIS_CLUSTER_SENTINELS; do
    list="${list:+$list,}127.0.0.1:$(_redis_port "$node")"
  done
  # nothing here needs quoting for eval: addresses, commas and a plain name
  echo "export BOTD_REDIS_SENTINELS=$list"
  echo "export BOTD_REDIS_SERVICE_NAME=$REDIS_CLUSTER_SERVICE"
}

redis_ctl() {  # redis_ctl NODE ARGS...: redis-cli against NODE, e.g. redis_ctl sentinel1 info
  local node
  node=$(_redis_node "${1:-}" ctl) || return 2
  shift
  redis-cli -h 127.0.0.1 -p "$(_redis_port "$node")" "$@"
}
