# shellcheck shell=bash
# RabbitMQ part of scripts/cluster (the contract is at the top of scripts/cluster): three nodes of
# the Debian package's RabbitMQ, rabbit1@localhost, rabbit2@localhost and rabbit3@localhost, AMQP
# on 127.0.0.1:5681/5682/5683, Erlang distribution on 25681/25682/25683, management plugin off,
# guest allowed from loopback only (the default).
#
# Why it is set up this way:
# - The scripts under /usr/lib/rabbitmq/bin are run as root directly: /usr/sbin/rabbitmqctl would
#   switch to the rabbitmq user, whose HOME holds the MAIN node's Erlang cookie. Here HOME is
#   $CLUSTER_DIR/rabbitmq/home, so servers and CLI share a cookie of their own.
# - RABBITMQ_CONF_ENV_FILE points at a file of our own: /etc/rabbitmq/rabbitmq-env.conf names the
#   main node; RABBITMQ_CONFIG_FILE and RABBITMQ_ENABLED_PLUGINS_FILE likewise keep the main
#   node's rabbitmq.conf (port 5672) and plugins out.
# - The CLI's own distribution ports (RABBITMQ_CTL_DIST_PORT_MIN..MAX) are 35700-35739, not the
#   default 35672-35682 the main node's CLI calls (other engineers' tests) compete for.
# - Nodes start in the background under setsid, so a caller's process group being killed (a test
#   timing out) does not take a node down; the node's pid file says which beam process to kill.
# - Nodes 2 and 3 join rabbit1 with join_cluster on their first start; later starts rejoin by
#   themselves from their data directory.

RABBITMQ_CLUSTER_NODES=(rabbit1 rabbit2 rabbit3)
RABBITMQ_BIN=/usr/lib/rabbitmq/bin

_rmq_dir() { echo "$CLUSTER_DIR/rabbitmq"; }

_rmq_index() {  # rabbitN -> N
  case $1 in
    rabbit1) echo 1 ;;
    rabbit2) echo 2 ;;
    rabbit3) echo 3 ;;
    *)
      echo "rabbitmq: unknown node '$1' (nodes: ${RABBITMQ_CLUSTER_NODES[*]})" >&2
      return 1
      ;;
  esac
}

_rmq_log() { echo "rabbitmq: $*" >&2; }

# Export the environment of NODE (in the caller's subshell): where its files are, its ports.
_rmq_export() {
  local node=$1 n dir
  n=$(_rmq_index "$node") || return 1
  dir=$(_rmq_dir)
  export HOME="$dir/home"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_NODENAME="$node@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$((5680 + n))
  export RABBITMQ_DIST_PORT=$((25680 + n))
  export RABBITMQ_MNESIA_BASE="$dir/$node/mnesia"
  export RABBITMQ_LOG_BASE="$dir/$node/log"
  export RABBITMQ_PID_FILE="$dir/$node/pid"
  export RABBITMQ_CONFIG_FILE="$dir/$node/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/$node/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CTL_DIST_PORT_MIN=35700
  export RABBITMQ_CTL_DIST_PORT_MAX=35739
}

# rabbitmqctl (or another CLI, e.g. RABBITMQ_CLI=rabbitmq-queues) against NODE, bounded in time.
_rmq_ctl() {
  local node=$1
  shift
  (
    _rmq_export "$node"
    exec timeout -k 5 "${RABBITMQ_CTL_TIMEOUT:-60}" "$RABBITMQ_BIN/${RABBITMQ_CLI:-rabbitmqctl}" \
      -q -n "$node@localhost" "$@"
  )
}

# The files every node needs; the cookie is made once and kept (nodes restart with it).
_rmq_prepare() {
  local dir node n
  dir=$(_rmq_dir)
  mkdir -p "$dir/home"
  if [ ! -s "$dir/home/.erlang.cookie" ]; then
    local cookie
    cookie=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc '[:upper:]')
    (umask 077 && printf '%s' "${cookie:0:32}" >"$dir/home/.erlang.cookie")
    chmod 400 "$dir/home/.erlang.cookie"
  fi
  cat >"$dir/rabbitmq-env.conf" <<'EOF'
# The cluster's nodes: loopback only, the machine's epmd (127.0.0.1:4369).
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  echo '[].' >"$dir/enabled_plugins"
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    n=$(_rmq_index "$node")
    mkdir -p "$dir/$node/mnesia" "$dir/$node/log"
    cat >"$dir/$node/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$((5680 + n))
loopback_users.guest = true
cluster_partition_handling = pause_minority
log.file.level = info
log.console = false
EOF
  done
}

# The beam pid of NODE when it is running, else nothing (and non-zero).
_rmq_pid() {
  local node=$1 pidfile pid
  pidfile="$(_rmq_dir)/$node/pid"
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  # the pid must still be this node's beam, not a recycled pid (the node name is not on the
  # command line: the beam's environment has it)
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx -- "RABBITMQ_PID_FILE=$pidfile" \
    || return 1
  echo "$pid"
}

_rmq_port_open() {  # _rmq_port_open PORT: something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start NODE in the background unless it runs; do not wait.
_rmq_launch() {
  local node=$1 dir
  dir=$(_rmq_dir)
  if pid=$(_rmq_pid "$node"); then
    _rmq_log "$node@localhost already running (pid $pid)"
    return 0
  fi
  rm -f "$dir/$node/pid"
  _rmq_log "starting $node@localhost" \
    "(amqp 127.0.0.1:$((5680 + $(_rmq_index "$node"))), log $dir/$node/log)"
  (
    _rmq_export "$node"
    cd "$dir/$node" || exit 1
    exec setsid "$RABBITMQ_BIN/rabbitmq-server" </dev/null >>"$dir/$node/log/startup.log" 2>&1
  ) &
  disown $! 2>/dev/null || true
}

# Wait until NODE has booted (its pid file and the rabbit app), at most 120 s.
_rmq_await() {
  local node=$1
  if ! RABBITMQ_CTL_TIMEOUT=150 _rmq_ctl "$node" wait --timeout 120 "$(_rmq_dir)/$node/pid" \
    >/dev/null; then
    _rmq_log "$node@localhost did not start; see $(_rmq_dir)/$node/log"
    tail -n 20 "$(_rmq_dir)/$node/log/startup.log" >&2 2>/dev/null || true
    return 1
  fi
}

# The running cluster members as NODE sees them, space-separated short names (rabbit1 ...);
# nothing when NODE does not answer (never a failure: callers run under set -e).
_rmq_running_members() {
  _rmq_ctl "$1" cluster_status --formatter json 2>/dev/null \
    | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'rabbit[0-9]*@localhost' \
    | sed 's/@localhost//' | sort | tr '\n' ' ' || true
}

_rmq_members() {  # all cluster members (running or not) as NODE sees them
  _rmq_ctl "$1" cluster_status --formatter json 2>/dev/null \
    | grep -o '"disk_nodes":\[[^]]*\]' | grep -o 'rabbit[0-9]*@localhost' \
    | sed 's/@localhost//' | sort | tr '\n' ' ' || true
}

# Make a booted NODE (not rabbit1) a member of rabbit1's cluster unless it is one already.
_rmq_join() {
  local node=$1
  [ "$node" != rabbit1 ] || return 0
  if [[ " $(_rmq_members "$node") " == *" rabbit1 "* ]]; then
    return 0
  fi
  _rmq_log "$node@localhost joins rabbit1@localhost"
  local step out
  for step in stop_app reset "join_cluster rabbit1@localhost" start_app; do
    # shellcheck disable=SC2086  # step is the command and its argument
    if ! out=$(_rmq_ctl "$node" $step 2>&1); then
      _rmq_log "$node@localhost: rabbitmqctl $step failed: $out"
      return 1
    fi
  done
}

rabbitmq_ctl() {  # rabbitmq_ctl NODE ARGS...: rabbitmqctl -n NODE@localhost ARGS
  _rmq_index "$1" >/dev/null || return 1
  RABBITMQ_CTL_TIMEOUT=${RABBITMQ_CTL_TIMEOUT:-120} _rmq_ctl "$@"
}

rabbitmq_nodes() {
  printf '%s\n' "${RABBITMQ_CLUSTER_NODES[@]}"
}

rabbitmq_up() {
  local node want got started=$SECONDS
  _rmq_prepare
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    _rmq_launch "$node"
  done
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    _rmq_await "$node" || return 1
  done
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    _rmq_join "$node" || return 1
  done
  # every node running and clustered, as rabbit1 sees it (a rejoin takes a moment)
  want="${RABBITMQ_CLUSTER_NODES[*]} "
  for _ in $(seq 1 60); do
    got=$(_rmq_running_members rabbit1)
    [ "$got" = "$want" ] && break
    sleep 1
  done
  if [ "$got" != "$want" ]; then
    _rmq_log "cluster not formed: running members '$got', want '$want'"
    return 1
  fi
  _rmq_log "cluster up in $((SECONDS - started)) s:" \
    "${RABBITMQ_CLUSTER_NODES[*]} (running, clustered)"
}

rabbitmq_down() {
  local dir node pid pids=()
  dir=$(_rmq_dir)
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    if pid=$(_rmq_pid "$node"); then
      _rmq_log "stopping $node@localhost (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  # SIGTERM is RabbitMQ's orderly stop; the data is removed anyway, so do not wait long
  for _ in $(seq 1 150); do
    local alive=()
    for pid in "${pids[@]}"; do
      [ -d "/proc/$pid" ] && alive+=("$pid")
    done
    pids=("${alive[@]}")
    [ ${#pids[@]} -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    _rmq_log "pid $pid did not stop in 15 s; kill -9"
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -d "$dir" ]; then
    rm -rf "$dir"
    _rmq_log "removed $dir"
  fi
}

rabbitmq_status() {
  local node n pid members="" rc=0 state
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    if _rmq_pid "$node" >/dev/null; then
      members=$(_rmq_running_members "$node")
      [ -n "$members" ] && break
    fi
  done
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    n=$(_rmq_index "$node")
    if ! pid=$(_rmq_pid "$node"); then
      state="down"
      rc=1
    elif ! _rmq_port_open $((5680 + n)); then
      state="starting (pid $pid, amqp port closed)"
      rc=1
    elif [[ " $members" != *" $node "* ]]; then
      state="running (pid $pid) but not in the cluster [${members% }]"
      rc=1
    else
      state="running (pid $pid), cluster [${members% }]"
    fi
    echo "rabbitmq $node@localhost amqp://127.0.0.1:$((5680 + n)) $state"
  done
  return $rc
}

rabbitmq_kill() {
  local node=$1 pid
  _rmq_index "$node" >/dev/null || return 1
  if ! pid=$(_rmq_pid "$node"); then
    _rmq_log "$node@localhost is not running"
    return 0
  fi
  _rmq_log "kill -9 $node@localhost (beam pid $pid)"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.05
  done
  _rmq_log "pid $pid still there after kill -9"
  return 1
}

rabbitmq_start() {
  local node=$1 got started=$SECONDS
  _rmq_index "$node" >/dev/null || return 1
  _rmq_prepare
  _rmq_launch "$node"
  _rmq_await "$node" || return 1
  _rmq_join "$node" || return 1
  for _ in $(seq 1 60); do
    got=$(_rmq_running_members "$node")
    [[ " $got" == *" $node "* ]] && break
    sleep 1
  done
  _rmq_log "$node@localhost running in $((SECONDS - started)) s, cluster [${got% }]"
}

rabbitmq_env() {
  local urls=() node
  for node in "${RABBITMQ_CLUSTER_NODES[@]}"; do
    urls+=("amqp://guest:guest@127.0.0.1:$((5680 + $(_rmq_index "$node")))/%2F")
  done
  local IFS=,
  echo "export BOTD_RABBITMQ_URL='${urls[*]}'"
}
