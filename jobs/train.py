"""Ray Job: the `train` stage (and the stages it needs, each skipped when already current).

    ray job submit --working-dir . -- python -m jobs.train --config configs/quick.yaml [key.path=value ...]
"""
import sys

from jobs._entry import run

if __name__ == "__main__":
    sys.exit(run("train"))
