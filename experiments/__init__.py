"""Experiments that run the trainers and the transfer protocols end to end: `make compare`, the
papers' head-to-head at equal measured training compute (compare: plan, run, report; the arms;
the step cost of each trainer; the report's tables and chart). Nothing in the toolkit imports it."""
