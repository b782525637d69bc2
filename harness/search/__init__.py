"""Nested hyper-parameter search (Optuna): every arm tuned with the same budget on inner folds.

- :mod:`harness.search.space`: the ``search:`` schema, key-path and bounds validation, applying a trial.
- :mod:`harness.search.nested`: the study of one outer run (:func:`~harness.search.nested.tune`).
- :mod:`harness.search.storage`: the studies' SQLite files next to the results store; resuming.

Importing this package loads neither Optuna nor torch (``harness.suite`` imports the schema).
"""
