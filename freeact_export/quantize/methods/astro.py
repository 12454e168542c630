"""astro: no transform; each weight is reshaped Astro-style (quantize/astro.py), then rounded."""

from __future__ import annotations

from freeact_export.quantize.methods import Method, register
from freeact_export.quantize.methods.calibrated import statistics_planner

register(Method("astro", 7, statistics_planner("rtn"), astro_weights=True))
