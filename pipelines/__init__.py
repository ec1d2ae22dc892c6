"""Kubeflow Pipelines v2 pipeline definitions wiring the components in components/."""
