"""INT8 calibration: data sources, statistics and caches.

Placeholder package until the precision issue lands; it is importable so the
layout is fixed and downstream code can depend on the name.
"""
__all__: list[str] = []
