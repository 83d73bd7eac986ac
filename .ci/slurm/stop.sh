#!/usr/bin/env bash
# Stop the cluster that .ci/slurm/start.sh started, and nothing else: each daemon is signalled
# only through its PID file under $PEFTLAB_SLURM_DIR, and only if /proc/<pid>/comm still names
# that daemon (a stale PID file never hits an unrelated process). No pkill/killall.
#   --purge   also delete $PEFTLAB_SLURM_DIR (configs, job and accounting state, logs).
# Either way the /etc/slurm/slurm.conf link start.sh made is removed (start.sh makes it again).
# Packages stay installed, so the next start.sh takes seconds.
set -euo pipefail
DIR=${PEFTLAB_SLURM_DIR:-/tmp/peftlab-slurm}
PURGE=0
if [[ ${1:-} == --purge ]]; then PURGE=1; fi
export SLURM_CONF=$DIR/etc/slurm.conf

# stop NAME:PIDFILE...: SIGTERM each daemon of a group at once, then wait (SIGKILL after 60 s)
stop() {
  local spec name pidfile pid i t
  local -a names=() pids=() pidfiles=()
  for spec in "$@"; do
    name=${spec%%:*} pidfile=${spec#*:}
    [[ -s $pidfile ]] || continue
    pid=$(<"$pidfile")
    if [[ ! $pid =~ ^[0-9]+$ || ! -r /proc/$pid/comm || $(<"/proc/$pid/comm") != "$name" ]]; then
      echo "slurm-stop: $name not running (stale $pidfile)"
      rm -f "$pidfile"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    names+=("$name") pids+=("$pid") pidfiles+=("$pidfile")
  done
  for i in "${!pids[@]}"; do
    for ((t = 0; t < 600; t++)); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "${pids[i]}" 2>/dev/null; then
      echo "slurm-stop: ${names[i]} (${pids[i]}) ignored SIGTERM for 60 s, sending SIGKILL"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
    rm -f "${pidfiles[i]}"
    echo "slurm-stop: stopped ${names[i]} (${pids[i]})"
  done
}

# Cancel the jobs our controller still knows, so their slurmstepd processes end with them.
if [[ -f $SLURM_CONF ]] && timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n ${jobs// /} ]]; then
    echo "slurm-stop: scancel $jobs"
    # shellcheck disable=SC2086 # one argument per job id
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
fi

# Reverse start order, in groups: slurmctld sends its last job records to slurmdbd, which writes
# them to MariaDB; munge serves all of them until the end.
stop "slurmd:$DIR/slurmd/slurmd.pid" "slurmctld:$DIR/slurm/slurmctld.pid"
stop "slurmdbd:$DIR/slurm/slurmdbd.pid"
stop "mariadbd:$DIR/mysql/mariadbd.pid" "munged:$DIR/munge/munged.pid"

# The client config link start.sh made, and only if it is ours: left pointing at a stopped controller, every
# snakemake start waited ~9 s in the SLURM plugin's `scontrol show config` (without a config it fails at once).
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]]; then
  rm -f /etc/slurm/slurm.conf
fi
if ((PURGE)); then
  rm -rf -- "$DIR"
  echo "slurm-stop: removed $DIR"
fi
