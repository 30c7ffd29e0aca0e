#!/usr/bin/env bash
# A real single-node Slurm cluster (Debian's slurmctld + slurmd) for development and CI.
#
#   slurm/local-cluster.sh up       start it (idempotent) and print the SLURM_CONF export line
#   slurm/local-cluster.sh status   daemons, node state and queue; exit 0 if up, 1 if not
#   slurm/local-cluster.sh down     cancel its jobs and stop the daemons it started
#
# Everything lives in one scratch folder, ${EDGEMPI_SLURM_DIR:-/tmp/edgempi-slurm} (any path,
# spaces included): config,
# state, spool, logs and pid files. Nothing in /etc changes. Only daemons whose pid files are
# in that folder (and whose command line names its slurm.conf, or is already gone as it exits)
# are ever signalled.
#
# Why the config looks like this (see the project's environment notes):
# - no munge, no systemd, no cgroups: auth/cred none, proctrack linuxproc, task none;
# - the node declares CPUs=16 (config_overrides) so that a 4-16 rank job fits on a 2-core
#   machine without --overcommit; MPI oversubscribes happily;
# - daemons reparented to a container's init are never reaped: an exited daemon stays a
#   zombie, so "alive" means "in /proc and not in state Z", not "kill -0 succeeds".
#
# Environment: EDGEMPI_SLURM_DIR (scratch folder), EDGEMPI_SLURM_PORT (slurmctld port, default
# 6817; slurmd uses the next one), EDGEMPI_SLURM_CPUS (declared CPUs, default 16),
# EDGEMPI_SLURM_TIMEOUT (seconds to wait for the node to come up or the daemons to stop, 60).
set -euo pipefail

DIR=${EDGEMPI_SLURM_DIR:-/tmp/edgempi-slurm}
# Slurm's config files end a value at a space, so a folder whose path has one is reached through
# a space-free symbolic link in /tmp, named by the folder's checksum (the same link every call).
if [[ $DIR == *[[:space:]]* ]]; then
    real=$(realpath -m -- "$DIR")
    mkdir -p -- "$real"
    link=/tmp/edgempi-slurm-$(printf %s "$real" | cksum | cut -d' ' -f1)
    ln -sfn -- "$real" "$link"
    DIR=$link
fi
PORT=${EDGEMPI_SLURM_PORT:-6817}
CPUS=${EDGEMPI_SLURM_CPUS:-16}
TIMEOUT=${EDGEMPI_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)
DAEMONS=(slurmctld slurmd)

die() { echo "local-cluster: $*" >&2; exit 1; }

# The pid in file $1. A daemon deletes its pid file as it exits, so the file can vanish
# between any two reads: that is "no pid", never an error (bash's $(<file) would end the script).
read_pid() { cat -- "$1" 2>/dev/null; }

# Is process $1 still running (not yet a zombie)? An exiting process loses its command line
# before it becomes a zombie, so this, not pid_alive, says when a stopped daemon is gone.
pid_running() {
    local state
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Is process $1 a live daemon of this cluster? Checked on the process, not on its pid file,
# which the daemon deletes before it has finished exiting.
pid_alive() {
    pid_running "$1" && [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") == *"$CONF"* ]]
}

# Is process $1 ours to stop: a live daemon of this cluster, or one already exiting (running,
# its command line gone)? Never a process that merely reuses a stale pid.
pid_ours() {
    pid_alive "$1" || { pid_running "$1" && [[ -z $(tr -d '\0' 2>/dev/null <"/proc/$1/cmdline") ]]; }
}

# Is pid file $1 pointing at a live daemon of this cluster?
alive() {
    local pid
    pid=$(read_pid "$1") || return 1
    pid_alive "$pid"
}

write_conf() {
    mkdir -p "$DIR"/{state,spool,log,run}
    cat >"$CONF" <<EOF
# Written by slurm/local-cluster.sh; rewritten on every "up".
ClusterName=edgempi
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

node_state() { SLURM_CONF=$CONF timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true; }

usable() { [[ $1 == idle* || $1 == mixed* || $1 == alloc* ]]; }

slurmd_start_time() {
    SLURM_CONF=$CONF timeout 10 scontrol -o show node "$NODE" 2>/dev/null |
        grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2 || true
}

all_alive() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$DIR/run/$d.pid" || return 1; done
}

cmd_up() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null ||
        die "slurmctld/slurmd not installed (apt-get install -y --no-install-recommends slurmd slurmctld slurm-client)"
    if all_alive && usable "$(node_state)"; then
        echo "local-cluster: already up in $DIR" >&2
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    # A half-started cluster (one daemon died): stop what is left and start both afresh.
    stop_daemons
    write_conf
    # The controller restores the node's last state from its state files, so "idle" alone
    # could be stale: also wait until it has heard from the slurmd started here.
    local d started ready=0 begun=$SECONDS deadline=$((SECONDS + TIMEOUT)) state=""
    local -A seen=()
    started=$(date +%Y-%m-%dT%H:%M:%S)
    slurmctld -f "$CONF" || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
    slurmd -f "$CONF" || die "slurmd failed to start; see $DIR/log/slurmd.log"
    while ((SECONDS < deadline)); do
        state=$(node_state)
        if usable "$state" && [[ ! $(slurmd_start_time) < $started ]]; then
            ready=1
            break
        fi
        case $state in
            down* | drain*) SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
        # A daemon that died (port taken, bad config): say why now. Under load a daemon can be
        # slow to write its pid file, so only one seen before, or silent for 10 s, counts.
        for d in "${DAEMONS[@]}"; do
            if alive "$DIR/run/$d.pid"; then
                seen[$d]=1
            elif [[ -n ${seen[$d]:-} ]] || ((SECONDS - begun > 10)); then
                stop_daemons
                die "$d exited: $(tail -n 1 "$DIR/log/$d.log" 2>/dev/null)"
            fi
        done
    done
    ((ready)) || die "node $NODE is '${state:-unreachable}' after ${TIMEOUT}s; logs in $DIR/log/"
    echo "local-cluster: up in $DIR (node $NODE, $CPUS CPUs, port $PORT)" >&2
    echo "export SLURM_CONF=$CONF"
}

# Cancel this cluster's jobs, then TERM (later KILL) the daemons named by our pid files.
stop_daemons() {
    local d pid deadline
    if alive "$DIR/run/slurmctld.pid"; then
        SLURM_CONF=$CONF timeout 10 scancel --partition=debug 2>/dev/null || true
        deadline=$((SECONDS + TIMEOUT))
        while ((SECONDS < deadline)) && [[ -n $(SLURM_CONF=$CONF timeout 10 squeue -h -t R,CG 2>/dev/null) ]]; do
            sleep 0.5
        done
    fi
    for d in slurmd slurmctld; do
        pid=$(read_pid "$DIR/run/$d.pid") && pid_ours "$pid" || { rm -f "$DIR/run/$d.pid"; continue; }
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + TIMEOUT))
        while ((SECONDS < deadline)) && pid_running "$pid"; do sleep 0.2; done
        if pid_ours "$pid"; then
            echo "local-cluster: $d ($pid) ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$DIR/run/$d.pid"
    done
}

cmd_down() {
    stop_daemons
    echo "local-cluster: down ($DIR kept: state and logs)" >&2
}

cmd_status() {
    local d pid up=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(read_pid "$DIR/run/$d.pid") && pid_alive "$pid"; then
            echo "$d: running (pid $pid)"
        else
            echo "$d: stopped"
            up=1
        fi
    done
    if ((up == 0)); then
        echo "node $NODE: $(node_state)"
        SLURM_CONF=$CONF timeout 10 squeue || true
        echo "export SLURM_CONF=$CONF"
    fi
    return $up
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status   (state in \${EDGEMPI_SLURM_DIR:-/tmp/edgempi-slurm})" >&2; exit 2 ;;
esac
