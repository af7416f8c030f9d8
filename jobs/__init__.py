"""Ray Job entrypoints: `ray job submit --working-dir . -- python -m jobs.<name> --config configs/<file>.yaml`."""
