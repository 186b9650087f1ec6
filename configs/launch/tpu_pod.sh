#!/usr/bin/env bash
# Train a llama_jax recipe on every worker of a Cloud TPU VM slice (one process per host).
#
#   configs/launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#   e.g. configs/launch/tpu_pod.sh my-v5p-512 us-east5-a configs/llama_7b.py /mnt/runs/llama_7b
#
# Every worker runs the same command; the trainer finds the TPU VM and calls
# jax.distributed.initialize(), which discovers the other workers by itself. WORKDIR must be a
# directory that every worker sees at the same path (a gcsfuse-mounted bucket, Filestore/NFS):
# each host writes its own shards of every checkpoint there. Rerunning the same command after a
# preemption resumes from the latest checkpoint.
#
# Environment: REPO_DIR (the checkout on the workers, default ~/llama_jax), PROJECT (gcloud
# project, optional), SETUP=1 to clone/update the repo and install it on all workers first
# (REPO_URL then names the git remote).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-'~/llama_jax'}
GCLOUD=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  GCLOUD+=(--project="$PROJECT")
fi

if [[ "${SETUP:-0}" == 1 ]]; then
  "${GCLOUD[@]}" --command "set -e; if [ ! -d $REPO_DIR ]; then git clone ${REPO_URL:?set REPO_URL} $REPO_DIR; fi; cd $REPO_DIR && git pull --ff-only && pip install -q -e '.[tpu]'"
fi

# Quote the extra flags for the remote shell.
EXTRA=$(printf ' %q' "$@")
"${GCLOUD[@]}" --command "cd $REPO_DIR && python -m llama_jax.train --config=$CONFIG --workdir=$WORKDIR$EXTRA"
