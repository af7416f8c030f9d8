"""Problems: the instance form, generators and readers (pure: no Ray)."""
from .generators import FAMILY_DEFAULTS, GENERATORS, SIZE_DEFAULTS, generate, params_for
from .instance import Instance, InstanceError, derive_seed, dumps, loads, read_json, write_json
from .readers import read_cnf, read_col, read_instance

__all__ = ["Instance", "InstanceError", "derive_seed", "dumps", "loads", "read_json", "write_json", "generate",
           "params_for", "GENERATORS", "SIZE_DEFAULTS", "FAMILY_DEFAULTS", "read_cnf", "read_col", "read_instance"]
