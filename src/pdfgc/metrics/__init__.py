"""Evaluation metrics: a registry (``registry``) and one file per metric.

The metric modules register themselves when imported; the registry imports them all on the
first lookup (``list_metrics``, ``metric_class``, ``build_metrics``), so ``tabulate`` stays
light.
"""
