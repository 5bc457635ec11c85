"""Analysis: Pareto fronts, comparisons across hardware, reports and plots over results."""
