"""Comparisons between runners: error statistics that say whether two graphs agree."""
