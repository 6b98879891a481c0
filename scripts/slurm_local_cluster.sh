#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages, for the tests marked `slurm`
# (tests/test_slurm.py) and for trying `launcher=slurm` by hand. Run as root; safe to run again:
# what is installed stays, a daemon that runs is left running.
#
#   bash scripts/slurm_local_cluster.sh          # install (apt) if needed, configure, start, wait
#   bash scripts/slurm_local_cluster.sh --stop   # stop the daemons this script started
#
# It writes /etc/slurm/slurm.conf only where there is none or where it wrote it before (its first
# line says so): a machine that already has a SLURM configuration is refused, never changed.
# Settings (environment): SLURM_LOCAL_CPUS, the CPUs the node offers (default: 4, or more where
# the machine has more; a 2-core machine is oversubscribed so that a test's jobs run side by
# side); SLURM_LOCAL_PARTITION (default: debug).
set -euo pipefail

MARK="# written by cmfnet scripts/slurm_local_cluster.sh"
CONF=/etc/slurm/slurm.conf
STATE=/var/lib/slurm
LOGS=/var/log/slurm
CPUS=${SLURM_LOCAL_CPUS:-$(($(nproc) > 4 ? $(nproc) : 4))}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
PACKAGES=(munge slurmctld slurmd slurm-client)

fail() {
    echo "slurm_local_cluster: $*" >&2
    exit 1
}

stop() {
    for daemon in slurmd slurmctld; do
        if [ -f "/run/$daemon.pid" ] && kill "$(cat "/run/$daemon.pid")" 2>/dev/null; then
            echo "stopped $daemon"
        fi
    done
}

if [ "${1:-}" = "--stop" ]; then
    stop
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || fail "no apt-get to install ${missing[*]}"
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || fail "apt-get install ${missing[*]} failed"
fi

if [ -f "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARK" ]; then
    fail "$CONF exists and was not written by this script: refusing to change a real cluster"
fi

HOST=$(hostname -s)
MEMORY_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd" "$LOGS"
new_conf=$(
    cat <<EOF
$MARK
ClusterName=cmfnet-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    stop # a changed configuration is read at the next start
    sleep 1
fi

if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (the munge package makes it)"
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c /usr/sbin/munged || fail "munged did not start"
    else
        /usr/sbin/munged --force || fail "munged did not start"
    fi
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld || fail "slurmctld did not start (see $LOGS)"
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd || fail "slurmd did not start (see $LOGS)"

for _ in $(seq 60); do
    state=$(sinfo --noheader --nodes="$HOST" --format=%t 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle | mix | alloc)
            echo "SLURM cluster up: node $HOST ($CPUS CPUs, ${MEMORY_MB} MB), partition $PARTITION"
            exit 0
            ;;
        down* | drain* | inval*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
            ;;
    esac
    sleep 1
done
fail "node $HOST did not become idle in 60 s (state: ${state:-none}; see $LOGS)"
