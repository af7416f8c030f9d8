#!/usr/bin/env bash
# A head and N worker nodes on this machine (separate raylets with their own CPUs), token auth on.
# Usage: cluster/local_multinode.sh [WORKERS] [CPUS_PER_NODE]     (Ctrl-C stops the nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m ray_pipeline.local_cluster start --workers "${1:-1}" --cpus "${2:-1}"
