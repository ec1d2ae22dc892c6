"""MLflow tracking and the model registry: the only part of palsyseg that talks to MLflow.

- :mod:`palsyseg.tracking.gates` — promotion gates on plain metric dicts (no MLflow).
- :mod:`palsyseg.tracking.runs` — tracking URI, training runs, per-epoch metrics, the logged
  model and checkpoint, evaluation reports and plots.
- :mod:`palsyseg.tracking.registry` — register a ``challenger``, list versions, promote to
  ``champion`` with a reviewer and an audit trail, roll back.

Importing this package imports no MLflow; the submodules import it inside their functions.
"""
