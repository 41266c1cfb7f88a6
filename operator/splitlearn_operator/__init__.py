"""splitlearn_operator: the kopf operator that runs `splitcore split` Jobs for SplitModels."""

__version__ = "0.1.0"
