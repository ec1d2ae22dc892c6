"""The reviewer's evaluation report: one standalone HTML page per evaluation.

:mod:`palsyseg.report.subgroups` splits the test split's per-image records by the manifest's
columns (diagnosis, pose, grade, beard, glasses, skin tone) and scores each part;
:mod:`palsyseg.report.html` renders the page (comparison table, per-class F1, confusion matrix,
subgroups, worst images, model card). :meth:`palsyseg.evaluate.EvaluationReport.save` writes
it as ``report.html`` beside ``report.json``.
"""

DISCLAIMER = "palsyseg is a research and screening aid, not a medical device; a clinician decides."
