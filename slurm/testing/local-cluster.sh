#!/usr/bin/env bash
# local-cluster.sh - a real, throw-away Slurm cluster on this one machine, for testing the
# templates in slurm/ (the test suite starts it; you can too).
#
#   local-cluster.sh start    install Slurm + munge from the distribution (apt-get) if missing,
#                             write a private slurm.conf, start munged, slurmctld and one slurmd
#                             per virtual node, wait (bounded) until every node is idle
#   local-cluster.sh stop     cancel this cluster's jobs, stop ONLY the daemons this script started
#   local-cluster.sh status   daemons, sinfo, squeue
#   local-cluster.sh env      print `export SLURM_CONF=...` for this cluster's client commands
#
# Needs root (daemons run as root, jobs run as the submitting user). Nothing outside
# $MPIML_SLURM_DIR is written except the apt packages: the configuration, state, logs, pid
# files and a private munge key and socket all live there, and the ports are not Slurm's
# defaults, so a site installation on the same machine is neither used nor touched.
# Clients must use this cluster's configuration:  eval "$(local-cluster.sh env)"
#
# Settings (environment):
#   MPIML_SLURM_DIR=/tmp/mpiml-slurm   everything this cluster writes
#   MPIML_SLURM_NODES=2                virtual nodes (slurmd processes) on this machine, so that
#                                      multi-node jobs really span several slurmd
#   MPIML_SLURM_CPUS=4                 CPUs declared per node (may exceed the real cores)
#   MPIML_SLURM_PORT=16817             slurmctld port; node i listens on PORT+i
#   MPIML_SLURM_WAIT=60                seconds to wait for the nodes to become idle
#   MPIML_SLURM_MPI=pmi2               MpiDefault (pmi2 suits MPICH, e.g. the pip "mpich" wheel)
#   MPIML_SLURM_FIRST_JOB_ID=random    first job id (FirstJobId); random by default, see below
set -uo pipefail

DIR=${MPIML_SLURM_DIR:-/tmp/mpiml-slurm}
NODES=${MPIML_SLURM_NODES:-2}
CPUS=${MPIML_SLURM_CPUS:-4}
PORT=${MPIML_SLURM_PORT:-16817}
WAIT=${MPIML_SLURM_WAIT:-60}
MPI_DEFAULT=${MPIML_SLURM_MPI:-pmi2}
# Job ids must not repeat across clusters started on one machine. MPICH names a job's
# node-shared memory after its PMI name, which under srun is "<job id>.<step id>"; a job
# killed mid-run leaves that segment in /dev/shm, and a later job with the same id would
# attach to it and fail in MPI_Init ("Message truncated", "failed to unpack address").
# A real cluster never reuses ids soon; a fresh cluster would start at 1 every time.
FIRST_JOB_ID=${MPIML_SLURM_FIRST_JOB_ID:-$(( ((RANDOM << 15) | RANDOM) % 60000000 + 100000 ))}
CONF=$DIR/etc/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
export SLURM_CONF=$CONF

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

node_names() { seq -f 'node%g' 1 "$NODES"; }

# A pid file names one of OUR daemons only while that process is alive (not a zombie) and
# its command line mentions this cluster's directory; so a recycled pid is never killed.
is_ours() { # pidfile
  local pid state
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
  [ "$state" != Z ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get (missing: ${missing[*]})"
  say "installing ${missing[*]}"
  # Containers commonly forbid starting services from packages (policy-rc.d); we start
  # our own daemons anyway, with our own configuration.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

write_conf() {
  local mem i=0 n nodes
  mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)   # half the RAM, split below
  mem=$((mem / NODES))
  nodes=$(node_names | paste -sd, -)
  mkdir -p "$DIR"/{etc,state,log,run}
  for n in $(node_names); do mkdir -p "$DIR/spool/$n" "$DIR/tmp/$n"; done   # slurmd won't create %n dirs
  {
    echo "# written by mpiml slurm/testing/local-cluster.sh; removed with $DIR"
    echo "ClusterName=mpimltest"
    echo "SlurmctldHost=localhost"
    echo "SlurmctldPort=$PORT"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    # Private munged socket. cred_expire also sets how long a requeued job waits before it
    # may start again (default 120 s); short here so requeue tests finish quickly.
    echo "AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=5"
    echo "StateSaveLocation=$DIR/state"
    echo "FirstJobId=$FIRST_JOB_ID"
    echo "SlurmdSpoolDir=$DIR/spool/%n"
    echo "TmpFS=$DIR/tmp/%n"
    echo "SlurmctldPidFile=$DIR/run/slurmctld.pidfile"
    echo "SlurmdPidFile=$DIR/run/slurmd-%n.pidfile"
    echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$DIR/log/slurmd-%n.log"
    # No cgroups in containers: track processes through /proc, do no CPU binding.
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "MpiDefault=$MPI_DEFAULT"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    # Start submitted jobs at once (default batch_sched_delay=3); run the main scheduler every
    # 2 s (default 60: a requeued job would wait up to a minute after it became eligible).
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=2"
    # Reject impossible requests at submission instead of leaving them pending forever.
    echo "EnforcePartLimits=ALL"
    # Declared CPUs may exceed the real ones (a 2-core CI machine runs 4-CPU nodes).
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "MinJobAge=600"
    echo "KillWait=5"
    echo "InactiveLimit=0"
    echo "MailProg=/bin/true"
    for n in $(node_names); do
      i=$((i + 1))
      echo "NodeName=$n NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF.new" && mv "$CONF.new" "$CONF"
}

start_daemon() { # name command...   (runs in its own session; its pid goes to run/NAME.pid)
  local name=$1; shift
  setsid "$@" </dev/null >"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/run/$name.pid"
}

all_running() {
  local f count=0
  for f in "$DIR"/run/*.pid; do is_ours "$f" || return 1; count=$((count + 1)); done
  [ "$count" -eq $((NODES + 2)) ]
}

bounded() { # seconds command...: retry every 0.25 s until it succeeds or time runs out
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$deadline" ] && return 1; sleep 0.25; done
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
nodes_idle() {
  local states
  states=$(sinfo -h -N -o '%t' 2>/dev/null)
  [ "$(grep -c . <<<"$states")" -eq "$NODES" ] && ! grep -qv '^idle$' <<<"$states"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
  install_packages
  if all_running && ctld_up; then say "already running ($DIR)"; return 0; fi
  stop_daemons   # a half-started earlier attempt
  write_conf

  install -d -m 0755 -o munge -g munge "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || {
    head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
    chown munge:munge "$DIR/munge/munge.key" && chmod 0400 "$DIR/munge/munge.key"
  }
  start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
    --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/seed"
  bounded 10 test -S "$DIR/munge/munge.socket" || { cat "$DIR/log/munged.out" >&2; die "munged did not start"; }

  start_daemon slurmctld /usr/sbin/slurmctld -D -f "$CONF"
  bounded 20 ctld_up || { tail -20 "$DIR/log/slurmctld.out" "$DIR/log/slurmctld.log" >&2; die "slurmctld did not come up"; }
  for n in $(node_names); do start_daemon "slurmd-$n" /usr/sbin/slurmd -D -N "$n" -f "$CONF"; done
  if ! bounded "$WAIT" nodes_idle; then
    sinfo -N >&2; tail -n 15 "$DIR"/log/slurmd-*.log >&2
    die "nodes not idle after $WAIT s (logs in $DIR/log); clean up with: $0 stop"
  fi
  all_running || die "a daemon exited during start-up (logs in $DIR/log)"
  say "up: $NODES node(s) x $CPUS CPUs; config $CONF"
}

stop_daemons() {
  local f pid i
  # slurmd first (they end running steps), then the controller, then munge.
  for f in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
    [ -e "$f" ] || continue
    if is_ours "$f"; then
      pid=$(cat "$f")
      kill -TERM "$pid" 2>/dev/null
      for i in $(seq 1 120); do is_ours "$f" || break; sleep 0.25; done
      is_ours "$f" && { say "pid $pid ignored SIGTERM for 30 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null; }
    fi
    rm -f "$f"
  done
}

stop() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  if [ -e "$DIR/run/slurmctld.pid" ] && is_ours "$DIR/run/slurmctld.pid" && ctld_up; then
    scancel --partition=debug 2>/dev/null
    bounded 30 test -z "$(squeue -h -o %i 2>/dev/null)" || say "jobs still listed after 30 s"
  fi
  stop_daemons
  say "stopped"
}

status() {
  local f
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    if is_ours "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; else echo "$(basename "$f" .pid): not running"; fi
  done
  sinfo -N 2>&1; squeue 2>&1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$(printf '%q' "$CONF")" ;;
  *) sed -n '2,27p' "$0" >&2; exit 2 ;;
esac
