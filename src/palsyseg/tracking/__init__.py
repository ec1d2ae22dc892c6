"""MLflow tracking and the model registry: the only part of palsyseg that talks to MLflow.

Runs (what a reviewer finds in the experiment ``palsyseg``):

- :mod:`palsyseg.tracking.runs` — tracking URI, the machine-learning experiment, training
  runs (params, per-epoch metrics, the dataset input), the logged model and checkpoint with
  its weights digest, evaluation metrics and plots.
- :mod:`palsyseg.tracking.pipeline_runs` — one parent run per pipeline run, holding the
  candidate's and baselines' runs, with the reviewer's summary (candidate vs baselines vs
  champion, gate verdicts, data version, registry outcome) as its description.
- :mod:`palsyseg.tracking.logged_model` — :class:`~palsyseg.tracking.logged_model.LogitsOnly`,
  the network as MLflow pickles it ("image batch -> class logits").

Promotion (what may become ``challenger``, and who makes a ``champion``):

- :mod:`palsyseg.tracking.gates` — promotion gates and the production policy
  (``mlflow/promotion.yaml``) on plain metric dicts (no MLflow).
- :mod:`palsyseg.tracking.registry` — the registry's public face: register a ``challenger``,
  list versions, the champion, the audit trail (and ``registry.promote`` & co).
- :mod:`palsyseg.tracking.champion` — the reviewer's changes of ``champion``: promote, roll
  back, retire, repair, each re-decided under the production policy and audited.
- :mod:`palsyseg.tracking.audit` — the hash-chained audit trail in registered-model tags and
  its verification against the ``champion`` alias.
- :mod:`palsyseg.tracking.identity` — who acts: the user a basic-auth server authenticated, or
  the declared name on a store without authentication.
- :mod:`palsyseg.tracking.lock` — the registry-wide promotion lock (a registered model created
  to acquire), with dead-holder detection.

Importing this package imports no MLflow; the submodules import it inside their functions.
"""
