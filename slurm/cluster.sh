#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and local trials (not for production).
#
#   slurm/cluster.sh start    install the Debian packages if missing, write the configs, start munged,
#                             slurmctld and slurmd, wait until the node is idle (idempotent)
#   slurm/cluster.sh stop     stop the daemons and remove the state directory (idempotent)
#   slurm/cluster.sh status   daemons and `sinfo`; exit 1 when the cluster is not up
#   slurm/cluster.sh env      print `export SLURM_CONF=...` (eval it before sbatch/squeue/scontrol)
#
# Settings (environment): TAVSE_SLURM_STATE (state dir, default ${TMPDIR:-/tmp}/tavse-slurm),
# TAVSE_SLURM_CPUS (CPUs the node advertises, default 8; more than the machine has is fine),
# TAVSE_SLURM_GPUS (fake GPUs for --gres=gpu:N, default 4), TAVSE_SLURM_CTLD_PORT /
# TAVSE_SLURM_D_PORT (default 6817 / 6818). Needs root (the daemons run as root here).
set -euo pipefail

STATE=${TAVSE_SLURM_STATE:-${TMPDIR:-/tmp}/tavse-slurm}
CPUS=${TAVSE_SLURM_CPUS:-8}
GPUS=${TAVSE_SLURM_GPUS:-4}
CTLD_PORT=${TAVSE_SLURM_CTLD_PORT:-6817}
D_PORT=${TAVSE_SLURM_D_PORT:-6818}
NODE=tavsenode
CONF=$STATE/slurm.conf
SOCK=$STATE/munge/munge.socket.2

log() { echo "cluster.sh: $*" >&2; }

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sbatch munged mungekey; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    # The package scripts would start the services: a policy-rc.d that exits 101 forbids that.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    ((created)) && rm -f "$policy"
    return 0
}

write_configs() {
    mkdir -p "$STATE"/{munge,ctld,spool,log,run,dev}
    chmod 755 "$STATE" "$STATE/munge"
    [[ -s $STATE/munge.key ]] || mungekey --create --keyfile="$STATE/munge.key" >/dev/null
    chmod 600 "$STATE/munge.key"
    local gpu_files=""
    for ((i = 0; i < GPUS; i++)); do
        ln -sfn /dev/null "$STATE/dev/fakegpu$i"   # gres.conf refuses regular files
    done
    ((GPUS > 0)) && gpu_files="$STATE/dev/fakegpu[0-$((GPUS - 1))]"
    cat >"$CONF" <<EOF
ClusterName=tavse
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
TaskPlugin=task/none
ProctrackType=proctrack/linuxproc
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
MinJobAge=2
KillWait=10
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$CPUS $( ((GPUS > 0)) && echo "Gres=gpu:$GPUS") State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
    {
        echo "AutoDetect=off"
        ((GPUS > 0)) && echo "NodeName=$NODE Name=gpu File=$gpu_files"
    } >"$STATE/gres.conf"
}

wait_idle() {
    local i state
    for ((i = 0; i < 150; i++)); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1 || true)
        case $state in idle | mix | alloc) return 0 ;; esac
        sleep 0.2
    done
    log "node not idle after 30 s (state: ${state:-none}); logs in $STATE/log"
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    return 1
}

start() {
    if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" && alive "$STATE/run/munged.pid"; then
        wait_idle && { log "already running ($CONF)"; return 0; }
    fi
    stop_daemons
    install_packages
    write_configs
    munged --socket="$SOCK" --key-file="$STATE/munge.key" --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/seed" --force
    slurmctld -f "$CONF" -i
    slurmd -f "$CONF" -N "$NODE"
    wait_idle
    log "up: SLURM_CONF=$CONF"
}

stop_daemons() {
    local name pidf pid i
    for name in slurmd slurmctld munged; do
        pidf=$STATE/run/$name.pid
        alive "$pidf" || continue
        pid=$(cat "$pidf")
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    done
    return 0
}

case ${1:-} in
    start) start ;;
    stop) stop_daemons; rm -rf "$STATE"; log "stopped" ;;
    status)
        ok=1
        for name in munged slurmctld slurmd; do
            if alive "$STATE/run/$name.pid"; then echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"; else echo "$name: stopped"; ok=0; fi
        done
        ((ok)) && SLURM_CONF=$CONF sinfo
        ((ok)) || exit 1 ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
