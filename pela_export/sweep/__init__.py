"""``pela-export sweep MODEL``: a grid of compression settings, each measured, and the Pareto front of
latency against accuracy with a recommendation.

One concept per module: :mod:`.grid` (the points), :mod:`.pareto` (the front, pure), :mod:`.run`
(run or resume points), :mod:`.measure` (one point through the real pipeline), :mod:`.chart` (the PNG)
and :mod:`.report` (table + recommendation). Importing this package loads none of torch or matplotlib.
"""
