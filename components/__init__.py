"""Kubeflow Pipelines v2 components: one per pipeline step, each a thin call into palsyseg."""
