#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost for CI and local testing (Debian 12, root, no systemd):
#
#   munged -> mariadbd -> slurmdbd -> (cluster, account peftlab) -> slurmctld -> slurmd
#
# Partitions `cpu` (default) and `gpu`; the node advertises production-like CPUs, memory and
# fake GPUs (SlurmdParameters=config_overrides), so the real profile's requests schedule here.
# Everything lives under $PEFTLAB_SLURM_DIR, including the configs and a private munge key and
# socket, so a munged already on the machine is left alone. The one file outside it is the
# symlink /etc/slurm/slurm.conf -> $PEFTLAB_SLURM_DIR/etc/slurm.conf, where clients look (a
# foreign slurm.conf there makes this script stop rather than replace it).
#
# Re-running is safe: packages are installed only when missing, running daemons are kept, and
# a changed config restarts only the SLURM daemons. Stop with .ci/slurm/stop.sh.
#
# Knobs (environment):
#   PEFTLAB_SLURM_DIR=/tmp/peftlab-slurm   state, configs, logs, PID files
#   PEFTLAB_SLURM_CPUS=64                   CPUs the node advertises (not what the machine has)
#   PEFTLAB_SLURM_MEM_MB=512000             memory the node advertises
#   PEFTLAB_SLURM_GPUS=4                    fake GPUs (gres gpu:<type>:N); 0 for none
#   PEFTLAB_SLURM_GPU_TYPE=fake             gres type, so both --gpus=1 and --gpus=fake:1 work
#   PEFTLAB_SLURM_ACCOUNT=peftlab           account registered with sacctmgr (root and $SUDO_USER)
#   PEFTLAB_SLURM_MAXTIME=2-00:00:00        partition MaxTime; longer requests are rejected
#   PEFTLAB_SLURM_DB_PORT=3307              MariaDB port on 127.0.0.1 (not 3306: leave a system DB be)
#   PEFTLAB_SLURM_INSTALL=1                 0: never call apt-get (fail if packages are missing)
set -euo pipefail

T0=$(date +%s%N)
DIR=${PEFTLAB_SLURM_DIR:-/tmp/peftlab-slurm}
CPUS=${PEFTLAB_SLURM_CPUS:-64}
MEM_MB=${PEFTLAB_SLURM_MEM_MB:-512000}
GPUS=${PEFTLAB_SLURM_GPUS:-4}
GPU_TYPE=${PEFTLAB_SLURM_GPU_TYPE:-fake}
ACCOUNT=${PEFTLAB_SLURM_ACCOUNT:-peftlab}
MAXTIME=${PEFTLAB_SLURM_MAXTIME:-2-00:00:00}
DB_PORT=${PEFTLAB_SLURM_DB_PORT:-3307}
INSTALL=${PEFTLAB_SLURM_INSTALL:-1}
CLUSTER=peftlab
DB_PASS=peftlab-ci # MariaDB listens on 127.0.0.1 only; the password guards nothing real

log() {
  local ms=$((($(date +%s%N) - T0) / 1000000))
  printf '[slurm-start %3d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
die() { echo "slurm-start: ERROR: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (daemons, apt-get)"
[[ $DIR == /* ]] || die "PEFTLAB_SLURM_DIR must be an absolute path (got $DIR)"

# ------------------------------------------------------------------ packages
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $INSTALL == 1 ]] || die "missing packages (PEFTLAB_SLURM_INSTALL=0): ${missing[*]}"
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
  log "installing ${missing[*]}"
  # Maintainer scripts would start system munged/mariadb through init.d: forbid that while we install.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ $own_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  log "packages installed"
fi

# ------------------------------------------------------------------ helpers
# is_ours NAME PIDFILE: the PID file names a live process called NAME (a stale file never matches)
is_ours() {
  local pid
  [[ -s $2 ]] || return 1
  pid=$(<"$2")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$1" ]]
}
stop_ours() { # NAME PIDFILE
  local pid i
  if ! is_ours "$1" "$2"; then rm -f "$2"; return 0; fi
  pid=$(<"$2")
  kill "$pid"
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -f "$2"
}
# spawn CMD...: run a daemon detached from the caller: cwd /, stdio on /dev/null and every other
# inherited descriptor closed. A daemon that keeps the caller's stdout pipe open makes a CI step
# (or Python's subprocess.run(capture_output=True)) wait forever for EOF.
spawn() {
  (
    cd /
    for fd in "/proc/$BASHPID/fd"/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@" </dev/null >/dev/null 2>&1
  )
}
wait_for() { # WHAT SECONDS CMD...: poll CMD (each try capped at 10 s) until it succeeds
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until timeout 10 "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what (logs: $DIR/*/*.log)"
    sleep 0.1
  done
}
# install_conf SRC DST OWNER MODE: replace DST with SRC; true when the content changed
install_conf() {
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  install -o "$3" -g "$3" -m "$4" "$1" "$2"
  rm -f "$1"
}

# ------------------------------------------------------------------ layout
# One directory per daemon user: each writes only its own. 755 so clients reach the munge socket.
install -d -m 755 "$DIR" "$DIR/etc" "$DIR/dev"
install -d -o munge -g munge -m 755 "$DIR/munge"
install -d -o mysql -g mysql -m 750 "$DIR/mysql"
install -d -o slurm -g slurm -m 755 "$DIR/slurm" "$DIR/slurm/state"
install -d -o root -g root -m 755 "$DIR/slurmd" "$DIR/slurmd/spool"
export SLURM_CONF=$DIR/etc/slurm.conf # daemons read slurmdbd.conf and gres.conf next to it
MUNGE_SOCKET=$DIR/munge/munge.socket
NODE=$(hostname -s) # slurmctld only runs where SlurmctldHost names this host

# ------------------------------------------------------------------ fake GPUs
# gres File= must be character devices: copies of /dev/null (c 1 3) schedule like real GPUs and
# make slurmstepd set CUDA_VISIBLE_DEVICES. Where mknod is not allowed, symlinks to /dev/null work.
GRES_CONF="AutoDetect=off"$'\n'
GRES_NODE=""
if ((GPUS > 0)); then
  for ((i = 0; i < GPUS; i++)); do
    dev=$DIR/dev/gpu$i
    if [[ ! -c $dev ]]; then
      rm -f "$dev"
      mknod -m 666 "$dev" c 1 3 2>/dev/null || ln -s /dev/null "$dev"
    fi
  done
  files=$DIR/dev/gpu0
  ((GPUS == 1)) || files="$DIR/dev/gpu[0-$((GPUS - 1))]"
  GRES_CONF+="NodeName=$NODE Name=gpu Type=$GPU_TYPE File=$files"$'\n'
  GRES_NODE=" Gres=gpu:$GPU_TYPE:$GPUS"
fi

# ------------------------------------------------------------------ configs
DEFMEM=$((MEM_MB / CPUS)) # jobs without --mem would otherwise get the whole node
cat >"$DIR/etc/slurm.conf.new" <<EOF
# generated by .ci/slurm/start.sh: single-node test cluster, do not edit
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
MailProg=/bin/true
StateSaveLocation=$DIR/slurm/state
SlurmctldPidFile=$DIR/slurm/slurmctld.pid
SlurmctldLogFile=$DIR/slurm/slurmctld.log
SlurmdSpoolDir=$DIR/slurmd/spool
SlurmdPidFile=$DIR/slurmd/slurmd.pid
SlurmdLogFile=$DIR/slurmd/slurmd.log
# advertise the configured node, not the CI machine's hardware
SlurmdParameters=config_overrides
# no cgroups in containers; affinity binding would target CPUs that do not exist
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEFMEM
# reject (not pend forever) jobs that ask for more than a partition allows, like strict sites
EnforcePartLimits=ALL
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# for slurmdbd connections this names the munge socket (AuthInfo covers only the rest)
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
# keep sbatch --comment (the plugin puts the rule name there) for sacct -o Comment
AccountingStoreFlags=job_comment
# unknown accounts are rejected at submit time, as on a production cluster
AccountingStorageEnforce=associations,limits,qos
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB$GRES_NODE State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=$MAXTIME State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=$MAXTIME State=UP
EOF
printf '%s' "$GRES_CONF" >"$DIR/etc/gres.conf.new"
cat >"$DIR/etc/slurmdbd.conf.new" <<EOF
# generated by .ci/slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
SlurmUser=slurm
LogFile=$DIR/slurm/slurmdbd.log
PidFile=$DIR/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
changed=0 dbd_changed=0
if install_conf "$DIR/etc/slurm.conf.new" "$DIR/etc/slurm.conf" root 644; then changed=1; fi
if install_conf "$DIR/etc/gres.conf.new" "$DIR/etc/gres.conf" root 644; then changed=1; fi
# slurmdbd refuses a config that others can read (it holds the DB password)
if install_conf "$DIR/etc/slurmdbd.conf.new" "$DIR/etc/slurmdbd.conf" slurm 600; then dbd_changed=1; fi
# Clients must find this config without SLURM_CONF: snakemake's jobstep plugin strips every
# SLURM_* variable (SLURM_CONF too) before it calls srun inside a job, and srun then reads
# /etc/slurm/slurm.conf. Link that to ours; never replace somebody else's config.
ETC_CONF=/etc/slurm/slurm.conf
if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$SLURM_CONF" ]]; then
  :
elif [[ -e $ETC_CONF ]]; then
  die "$ETC_CONF ($(readlink -f "$ETC_CONF")) is not this cluster's config; not replacing it" \
    "(another start.sh cluster: stop it with stop.sh --purge and its PEFTLAB_SLURM_DIR)"
else
  install -d -m 755 /etc/slurm
  ln -sfn "$SLURM_CONF" "$ETC_CONF" # -f: replaces only a dangling link (checked above)
fi
if ((changed || dbd_changed)); then
  # node/partition changes need a restart (scontrol reconfigure does not add nodes or GRES)
  stop_ours slurmd "$DIR/slurmd/slurmd.pid"
  stop_ours slurmctld "$DIR/slurm/slurmctld.pid"
  if ((dbd_changed)); then stop_ours slurmdbd "$DIR/slurm/slurmdbd.pid"; fi
fi

# ------------------------------------------------------------------ munged (private key and socket)
if is_ours munged "$DIR/munge/munged.pid"; then
  log "munged already running"
else
  if [[ ! -s $DIR/munge/munge.key ]]; then
    runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key"
  fi
  spawn runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" \
    --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  wait_for munged 10 bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
  log "munged started"
fi

# ------------------------------------------------------------------ MariaDB + slurmdbd
DB_SOCKET=$DIR/mysql/mysqld.sock
if is_ours mariadbd "$DIR/mysql/mariadbd.pid"; then
  log "mariadbd already running"
else
  if [[ ! -d $DIR/mysql/data/mysql ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/mysql/install.log" 2>&1 ||
      die "mariadb-install-db failed, see $DIR/mysql/install.log"
  fi
  # mariadbd stays in the foreground: setsid -f puts it in its own session, detached from us
  spawn setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql/data" \
    --socket="$DB_SOCKET" --pid-file="$DIR/mysql/mariadbd.pid" --log-error="$DIR/mysql/mariadbd.log" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
  wait_for mariadbd 60 mariadb-admin --no-defaults --socket="$DB_SOCKET" ping
  wait_for "mariadbd pid file" 10 test -s "$DIR/mysql/mariadbd.pid"
  log "mariadbd started"
fi
mariadb --no-defaults --socket="$DB_SOCKET" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
if is_ours slurmdbd "$DIR/slurm/slurmdbd.pid"; then
  log "slurmdbd already running"
else
  spawn slurmdbd # daemonizes and drops to SlurmUser
  wait_for slurmdbd 60 sacctmgr -n list cluster
  log "slurmdbd started"
fi
# Register cluster, account and users before slurmctld starts, so it enforces them from its
# first job. `sacctmgr add` exits 1 when there is nothing new: look (one query) before adding.
assocs=$(sacctmgr -n -P list assoc format=cluster,account,user)
if ! grep -q "^$CLUSTER|" <<<"$assocs"; then sacctmgr -i add cluster "$CLUSTER" >/dev/null; fi
if ! grep -q "^$CLUSTER|$ACCOUNT|" <<<"$assocs"; then
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=peftlab organization=peftlab >/dev/null
fi
for user in root ${SUDO_USER:-}; do
  if ! grep -qx "$CLUSTER|$ACCOUNT|$user" <<<"$assocs"; then
    sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
  fi
done
log "accounting: cluster=$CLUSTER account=$ACCOUNT users=[root ${SUDO_USER:-}]"

# ------------------------------------------------------------------ slurmctld + slurmd
if is_ours slurmctld "$DIR/slurm/slurmctld.pid"; then
  log "slurmctld already running"
else
  spawn slurmctld # daemonizes, drops to SlurmUser
  wait_for slurmctld 60 bash -c 'scontrol ping | grep -q UP'
  log "slurmctld started"
fi
if is_ours slurmd "$DIR/slurmd/slurmd.pid"; then
  log "slurmd already running"
else
  spawn slurmd
  wait_for "slurmd pid file" 20 test -s "$DIR/slurmd/slurmd.pid"
  log "slurmd started"
fi
node_ready() { [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1) =~ ^(idle|mixed|allocated|completing)$ ]]; }
for ((i = 0; i < 100; i++)); do
  node_ready && break
  # a node left DOWN by an earlier, unclean stop is returned to service
  if [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1) =~ down|drain ]]; then
    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
  fi
  sleep 0.2
done
node_ready || { sinfo -R; die "node $NODE not usable: $(sinfo -h -n "$NODE" -o %T)"; }

sinfo -o '%10P %.5a %.12l %.6D %.6t %.5c %.8m %G'
log "SLURM up in $((($(date +%s%N) - T0) / 1000000)) ms (config: $ETC_CONF -> $SLURM_CONF)"
