"""Allocation: the problem, plans, and the solvers that turn one into the other."""
