#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and trying the job scripts (not for production).
#   slurm/localcluster.sh start DIR   writes DIR/slurm.conf, starts munged (if none runs), slurmctld and slurmd
#   slurm/localcluster.sh stop DIR    stops the daemons started from DIR
# Then: export SLURM_CONF=DIR/slurm.conf (sbatch, squeue, scontrol read it). Needs slurm-wlm and munge
# (Debian: apt-get install slurm-wlm munge) and root (slurmd starts jobs as their user).
# One node with this machine's name and its CPUs; proctrack/linuxproc and task/none: no cgroups needed.
set -euo pipefail
cmd=${1:?usage: localcluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: localcluster.sh start|stop DIR}" && cd "$2" && pwd)
host=$(hostname -s)
case $cmd in
start)
  for exe in slurmctld slurmd munged sbatch; do
    command -v "$exe" >/dev/null && continue
    echo "localcluster.sh: $exe not found (apt-get install slurm-wlm munge)" >&2
    exit 2
  done
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
MinJobAge=600
KillWait=10
ReturnToService=2
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(getconf _NPROCESSORS_ONLN) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  if ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge: /run/munge 2>/dev/null || true
    runuser -u munge -- munged || munged --force
  fi
  slurmctld -f "$dir/slurm.conf" -i
  slurmd -f "$dir/slurm.conf"
  export SLURM_CONF=$dir/slurm.conf
  for _ in $(seq 60); do  # the node answers and is idle
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "localcluster.sh: node $host up (SLURM_CONF=$SLURM_CONF)"
      exit 0
    fi
    sleep 1
  done
  echo "localcluster.sh: the node did not come up; see $dir/log" >&2; exit 1 ;;
stop)  # cancel its jobs, wait until they are gone, then shut the daemons down
  export SLURM_CONF=$dir/slurm.conf
  jobs=$(squeue -h -o %A 2>/dev/null || true)
  [ -z "$jobs" ] || scancel $jobs
  for _ in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 1; done
  scontrol shutdown >/dev/null 2>&1 || true ;;
*) echo "usage: localcluster.sh start|stop DIR" >&2; exit 2 ;;
esac
