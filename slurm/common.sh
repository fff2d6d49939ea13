# Shared prologue of the slurm/*.sbatch jobs. Sourced, never run:
#
#   TAVSE_REPO=${TAVSE_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
#   source "$TAVSE_REPO/slurm/common.sh" cpu|gpu "$@"
#
# Outside a job (the script run directly: `slurm/train.sbatch ...`) it submits the script with
# sbatch, taking the partition (and GRES for gpu jobs) from .env, and exits. Extra sbatch options:
# call `sbatch [options] slurm/X.sbatch ...` from the repository root instead, or set SBATCH_* vars.
# A script that submits jobs itself sets TAVSE_SELF_SUBMIT=0 first: outside a job common.sh then
# only loads .env and defines tavse_activate and tavse_sbatch_opts (the options of that submission).
# Inside a job it cds to the repository, loads .env, activates the venv or conda env named there,
# exports TAVSE_SCRATCH_DIR (absolute), installs the USR1/TERM traps and prints the ready line.
# Then the script runs its command with `tavse_run CMD...`, which forwards a USR1/TERM to the
# stage process, waits for it, and requeues the job after a USR1 that stopped it early.

_tavse_kind=${1:-cpu}
shift || true
TAVSE_REPO=$(cd "${TAVSE_REPO:-${SLURM_SUBMIT_DIR:-.}}" && pwd)
export TAVSE_REPO

tavse_load_env() {
    if [[ -f $TAVSE_REPO/.env ]]; then
        set -a
        # shellcheck disable=SC1091
        source "$TAVSE_REPO/.env"
        set +a
    fi
}

# The venv or conda env named in .env (default: .venv in the repository), if any.
tavse_activate() {
    if [[ -n ${TAVSE_CONDA_ENV:-} ]]; then
        # shellcheck disable=SC1091
        eval "$(conda shell.bash hook)" && conda activate "$TAVSE_CONDA_ENV"
    elif [[ -n ${TAVSE_VENV:-} || -d $TAVSE_REPO/.venv ]]; then
        local venv=${TAVSE_VENV:-$TAVSE_REPO/.venv}
        [[ $venv = /* ]] || venv=$TAVSE_REPO/$venv
        # shellcheck disable=SC1091
        source "$venv/bin/activate"
    fi
}

# tavse_sbatch_opts KIND SCRIPT [LOG]: the sbatch options of a submission of SCRIPT, in the array
# TAVSE_SBATCH_OPTS: the repository as working directory and TAVSE_REPO, the partition (and GRES
# for KIND gpu) from .env, the log .tavse/slurm-logs/LOG (default %x-%j.out, %x-%A_%a.out for a
# script with an #SBATCH --array line).
tavse_sbatch_opts() {
    local kind=$1 script=$2 log=${3:-} part
    TAVSE_SBATCH_OPTS=(--chdir="$TAVSE_REPO" --export="ALL,TAVSE_REPO=$TAVSE_REPO")
    if [[ $kind == gpu ]]; then
        part=${TAVSE_SLURM_GPU_PARTITION:-${TAVSE_SLURM_PARTITION:-}}
        if [[ -n ${TAVSE_SLURM_GRES:-} ]]; then TAVSE_SBATCH_OPTS+=(--gres="$TAVSE_SLURM_GRES"); fi
    else
        part=${TAVSE_SLURM_PARTITION:-}
    fi
    if [[ -n $part ]]; then TAVSE_SBATCH_OPTS+=(--partition="$part"); fi
    mkdir -p "$TAVSE_REPO/.tavse/slurm-logs"
    if [[ -z $log ]]; then
        log=%x-%j.out
        if grep -q '^#SBATCH --array' "$script"; then log=%x-%A_%a.out; fi
    fi
    TAVSE_SBATCH_OPTS+=(--output="$TAVSE_REPO/.tavse/slurm-logs/$log")
}

# ---------------------------------------------------------------- outside a job: submit ourselves
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    tavse_load_env
    if [[ ${TAVSE_SELF_SUBMIT:-1} == 0 ]]; then
        return 0
    fi
    tavse_sbatch_opts "$_tavse_kind" "$0"
    exec sbatch "${TAVSE_SBATCH_OPTS[@]}" "$0" "$@"
fi

# ---------------------------------------------------------------- inside a job
cd "$TAVSE_REPO"
tavse_load_env
tavse_activate

TAVSE_SCRATCH_DIR=${TAVSE_SCRATCH_DIR:-$TAVSE_REPO/.tavse/scratch}
[[ $TAVSE_SCRATCH_DIR = /* ]] || TAVSE_SCRATCH_DIR=$TAVSE_REPO/$TAVSE_SCRATCH_DIR
mkdir -p "$TAVSE_SCRATCH_DIR"
export TAVSE_SCRATCH_DIR
# One thread per allocated CPU (torch would otherwise use every core of the node).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

TAVSE_SIGNAL=""   # USR1 or TERM once one has arrived
# What the stage gets when the job gets USR1: USR1 for train (saves its state and exits 75); a
# script may set TERM for a stage that resumes after being killed (ingest). The job is requeued.
TAVSE_FORWARD_USR1_AS=${TAVSE_FORWARD_USR1_AS:-USR1}
TAVSE_CHILD=""    # pid of the command run by tavse_run

# The stage processes (python -m stages.X): the command started by tavse_run and those below it.
_tavse_stage_pids() {
    local queue=("$TAVSE_CHILD") pid kid
    tr '\0' ' ' <"/proc/$TAVSE_CHILD/cmdline" 2>/dev/null | grep -q -- '-m stages\.' && echo "$TAVSE_CHILD"
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        for kid in $(pgrep -P "$pid" 2>/dev/null); do
            queue+=("$kid")
            tr '\0' ' ' <"/proc/$kid/cmdline" 2>/dev/null | grep -q -- '-m stages\.' && echo "$kid"
        done
    done
    return 0
}

_tavse_forward() {
    [[ -n $TAVSE_CHILD && -n $TAVSE_SIGNAL ]] || return 0
    local pids
    pids=$(_tavse_stage_pids)
    local sig=$TAVSE_SIGNAL
    [[ $sig == USR1 ]] && sig=${TAVSE_FORWARD_USR1_AS:-USR1}
    if [[ -n $pids ]]; then kill -s "$sig" $pids 2>/dev/null || true; fi
    return 0
}

_tavse_on_signal() {
    echo "tavse: job $SLURM_JOB_ID got SIG$1 at $(date +%T), forwarding it to the stage" >&2
    TAVSE_SIGNAL=$1
    _tavse_forward
}

trap '_tavse_on_signal USR1' USR1
trap '_tavse_on_signal TERM' TERM

# Run CMD in the background (bash runs a trap only between commands: `cmd & wait` lets it run at
# once), with USR1 ignored in it so that DVC survives a USR1 sent to the whole job; the stage
# (train) installs its own handler. After a signal the stage is sent it again every few seconds
# until the command ends (a signal that came before the stage had its handler is not lost).
# Returns the command's exit status; after a USR1 with a non-zero status, requeues the job.
tavse_run() {
    (trap '' USR1; exec "$@") &
    TAVSE_CHILD=$!
    local rc again
    while :; do
        if [[ -n $TAVSE_SIGNAL ]]; then
            sleep 3 &
            wait $! 2>/dev/null || true
            _tavse_forward
            if kill -0 "$TAVSE_CHILD" 2>/dev/null; then continue; fi
        fi
        rc=0
        wait "$TAVSE_CHILD" || rc=$?
        if ! kill -0 "$TAVSE_CHILD" 2>/dev/null; then
            again=0
            wait "$TAVSE_CHILD" 2>/dev/null || again=$?
            if ((again != 127)); then rc=$again; fi
            break
        fi
    done
    TAVSE_CHILD=""
    if ((rc != 0)) && [[ $TAVSE_SIGNAL == USR1 ]]; then
        echo "tavse: stopped after SIGUSR1 (exit $rc): requeueing job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0})" >&2
        if scontrol requeue "$SLURM_JOB_ID"; then
            exit 0
        fi
        echo "tavse: requeue refused (submitted with --no-requeue?): resubmit to resume" >&2
        exit 75
    fi
    return "$rc"
}

# A clone of the submitting repository for one array task, entered (DVC allows one writer per
# workspace): a git clone at its HEAD under $TAVSE_CLONES_DIR with the workspace's uncommitted
# changes copied over (params.yaml edits included), using the repository's DVC cache (no copy of
# the data). It survives a requeue, so a requeued task resumes in it.
tavse_enter_clone() {
    local name=$1 clones clone cache
    clones=${TAVSE_CLONES_DIR:-$TAVSE_REPO/.tavse/clones}
    [[ $clones = /* ]] || clones=$TAVSE_REPO/$clones
    clone=$clones/$name
    cache=$(cd "$TAVSE_REPO" && dvc cache dir)
    [[ $cache = /* ]] || cache=$TAVSE_REPO/$cache
    if [[ ! -e $clone/.tavse-clone-ready ]]; then
        echo "tavse: cloning the workspace into $clone"
        rm -rf "$clone"
        mkdir -p "$clones"
        git clone -q "$TAVSE_REPO" "$clone"
        git -C "$clone" checkout -q --detach "$(git -C "$TAVSE_REPO" rev-parse HEAD)"
        # The workspace's uncommitted state: modified and untracked (not ignored) files, deletions.
        (cd "$TAVSE_REPO" && git ls-files -z -co --exclude-standard |
            while IFS= read -r -d '' f; do
                [[ -f $f && ! -L $f && $f != slurm-*.out ]] && printf '%s\0' "$f"
            done | tar --null -T - -cf - | tar -xf - -C "$clone"
            git ls-files -z -d | (cd "$clone" && xargs -0 -r rm -f --))
        (cd "$clone" && dvc cache dir --local "$cache" && dvc checkout --allow-missing -q) || true
        touch "$clone/.tavse-clone-ready"
        echo ".tavse-clone-ready" >>"$clone/.git/info/exclude"
    fi
    TAVSE_CLONE=$clone
    cd "$clone"
}

# Push commit SOURCE of the current clone to the repository as the DVC experiment NAME on top of
# commit BASELINE (refs/exps/<ab>/<cdef...>/NAME, as DVC names it), then remove the clone unless
# TAVSE_KEEP_CLONES is set.
tavse_push_experiment() {
    local name=$1 baseline=$2 source=$3
    git push -q -f origin "$source:refs/exps/${baseline:0:2}/${baseline:2}/$name"
    echo "tavse: experiment $name pushed to $TAVSE_REPO at $(date +%T)"
    if [[ -z ${TAVSE_KEEP_CLONES:-} ]]; then
        cd "$TAVSE_REPO"
        rm -rf "$TAVSE_CLONE"
    fi
}

echo "tavse: ready job=$SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ task=$SLURM_ARRAY_TASK_ID} restart=${SLURM_RESTART_COUNT:-0} host=$(hostname -s) repo=$TAVSE_REPO scratch=$TAVSE_SCRATCH_DIR python=$(command -v python || echo none) at $(date +%T)"
