"""Ray Job: the whole pipeline (the stages listed in the config's `stages`).

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python -m jobs.pipeline --config configs/default.yaml run.root=/shared/runs
"""
import sys

from jobs._entry import run

if __name__ == "__main__":
    sys.exit(run("run"))
