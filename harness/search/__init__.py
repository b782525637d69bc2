"""Nested hyper-parameter search (Optuna): every arm tuned with the same budget on inner folds.

- :mod:`harness.search.nested`: the study of one outer run (:func:`~harness.search.nested.tune`).
- :mod:`harness.search.storage`: the studies' SQLite files next to the results store; resuming.

The ``search:`` section's schema, its space and applying a trial belong to the suite
(:mod:`harness.suite.search`): this package reads them, and the suite never imports this package.
Importing this package loads neither Optuna nor torch.
"""
