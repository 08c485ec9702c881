#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for running WhatsNext's SLURM formatter against a real
# sbatch/squeue/scontrol/scancel (tests, local experiments).
#
# Usage: scripts/local-slurm.sh [start]   install (if needed), configure and start; default
#        scripts/local-slurm.sh stop      stop slurmctld and slurmd (munged is left running)
#        scripts/local-slurm.sh status    exit 0 when the node is up and accepting jobs
#
# Needs root. On Debian/Ubuntu the packages slurm-wlm and munge are installed with apt-get when
# missing. The node offers max(8, all CPUs) CPUs (CPU_COUNT), 80% of memory, partition "debug", and GPU_COUNT (default 2)
# GRES "gpu" slots backed by stand-in device files (no real GPUs behind them): a job asking for
# --gres=gpu:1 is scheduled against them and sees CUDA_VISIBLE_DEVICES.
# Accounting is off (sacct answers nothing); job state comes from squeue and `scontrol show job`,
# which keeps finished jobs for an hour (MinJobAge). A submitted job is scheduled at the
# controller's next pass (within a second: batch_sched_delay=0), not up to 3 s later.
#
# Safe to run repeatedly: when the daemons are already up with the same configuration, `start`
# only checks the node and returns.
set -euo pipefail

GPU_COUNT=${GPU_COUNT:-2}
# CPUs the node advertises: at least 8 so that several small test jobs run side by side even on a
# small machine (jobs then share the real cores; this is a test cluster, not a production one).
real_cpus=$(nproc)
CPU_COUNT=${CPU_COUNT:-$((real_cpus > 8 ? real_cpus : 8))}
PARTITION=${PARTITION:-debug}
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
action=${1:-start}

die() {
  echo "local-slurm: $*" >&2
  exit 1
}
say() { echo "local-slurm: $*"; }

node_up() {
  sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

stop_daemons() {
  if command -v scontrol >/dev/null; then
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  # Only the daemons this script starts, matched by exact process name.
  for name in slurmctld slurmd; do
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
      kill "$pid" 2>/dev/null || true
    done
  done
  for _ in $(seq 50); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0
    sleep 0.1
  done
  for name in slurmctld slurmd; do
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
      kill -9 "$pid" 2>/dev/null || true
    done
  done
}

case $action in
  start | stop | status | restart) ;;
  -h | --help | help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown action '$action' (use start, stop, restart or status)" ;;
esac

if [[ $action == status ]]; then
  if node_up; then
    sinfo
    exit 0
  fi
  echo "local-slurm: not running" >&2
  exit 1
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo bash $0 $action)"

if [[ $action == stop ]]; then
  stop_daemons
  say "stopped"
  exit 0
fi

# --- packages -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm is not installed and apt-get is unavailable (Debian/Ubuntu only)"
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # One installer at a time (the test suite's take the same lock), waiting for dpkg's lock.
  apt_get() { flock /tmp/whatsnext-apt.lock apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt_get update -qq || die "apt-get update failed"
  apt_get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
fi
for cmd in slurmctld slurmd sbatch squeue scontrol scancel sinfo munged munge unmunge; do
  command -v "$cmd" >/dev/null || die "'$cmd' not found after installation"
done

host=$(hostname -s)
cpus=$CPU_COUNT
mem=$(free -m | awk '/^Mem:/{print int($2*0.8)}')
# A job that does not ask for memory gets its share per CPU instead of the whole node.
def_mem=$((mem / cpus))

# --- munge ----------------------------------------------------------------------------------
mkdir -p /etc/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
  su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start"
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge does not work (see /var/log/munge/)"
fi

# --- configuration --------------------------------------------------------------------------
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" "$CONF_DIR"
# GPU GRES need device files; character devices made for the purpose stand in for real GPUs.
gres=""
for ((i = 0; i < GPU_COUNT; i++)); do
  if [[ ! -e /dev/fakegpu$i ]]; then
    mknod "/dev/fakegpu$i" c 1 3 || die "cannot create /dev/fakegpu$i (mknod not permitted?)"
  fi
  gres+="NodeName=$host Name=gpu File=/dev/fakegpu$i"$'\n'
done
gres_line=""
[[ $GPU_COUNT -gt 0 ]] && gres_line=" Gres=gpu:$GPU_COUNT"

conf=$(
  cat <<CONF
# Written by WhatsNext scripts/local-slurm.sh: one node, for local tests.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SlurmdParameters=config_overrides
DefMemPerCPU=$def_mem
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)

changed=0
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ $(cat "$CONF_DIR/slurm.conf") != "$conf" ]]; then
  printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
  changed=1
fi
if [[ ! -f $CONF_DIR/gres.conf ]] || [[ $(cat "$CONF_DIR/gres.conf") != "${gres%$'\n'}" ]]; then
  printf '%s' "$gres" >"$CONF_DIR/gres.conf"
  changed=1
fi

# --- daemons --------------------------------------------------------------------------------
if [[ $action == start && $changed -eq 0 ]] && pgrep -x slurmctld >/dev/null \
  && pgrep -x slurmd >/dev/null && node_up; then
  say "already running"
  sinfo
  exit 0
fi

# (re)start both daemons so they read this configuration
stop_daemons
slurmctld -i || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
for _ in $(seq 60); do
  if node_up; then
    say "up: partition $PARTITION, $cpus CPUs, ${mem} MB, $GPU_COUNT stand-in GPUs"
    sinfo
    exit 0
  fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
echo "local-slurm: slurm did not come up within 30 s; last lines of the logs:" >&2
tail -n 5 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
exit 1
