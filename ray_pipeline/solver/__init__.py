"""The backtracking solver (pure: no Ray). The search runs in the native core (native/); see core.py."""
from .core import (HEURISTICS, PROPAGATIONS, VALUE_ORDERS, Compiled, Result, Solver, SolverBug, Stats, Trace,
                   compile_instance, count_solutions, solve)

__all__ = ["Solver", "Compiled", "compile_instance", "Result", "Stats", "SolverBug", "Trace", "solve",
           "count_solutions", "HEURISTICS", "PROPAGATIONS", "VALUE_ORDERS"]
