"""palsyseg: face parsing and facial-paralysis segmentation, from dataset to registered model.

Importing this package touches no disk and no network; heavy libraries (torch, MLflow, DVC,
Great Expectations) are imported by the modules that need them, not here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
