"""The backtracking solver (pure: no Ray)."""
from .core import (HEURISTICS, PROPAGATIONS, VALUE_ORDERS, Compiled, Result, Solver, SolverBug, Stats, compile_instance,
                   count_solutions, solve)

__all__ = ["Solver", "Compiled", "compile_instance", "Result", "Stats", "SolverBug", "solve", "count_solutions", "HEURISTICS", "PROPAGATIONS",
           "VALUE_ORDERS"]
