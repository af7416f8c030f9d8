"""The backtracking solver (pure: no Ray)."""
from .core import HEURISTICS, PROPAGATIONS, VALUE_ORDERS, Result, Solver, SolverBug, Stats, count_solutions, solve

__all__ = ["Solver", "Result", "Stats", "SolverBug", "solve", "count_solutions", "HEURISTICS", "PROPAGATIONS",
           "VALUE_ORDERS"]
