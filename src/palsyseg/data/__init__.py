"""Everything that reads or writes dataset files: the manifest contract, the synthetic
generator, importers of public face-parsing datasets, and the torch ``Dataset``.

Only this package touches dataset files on disk (shared/ARCHITECTURE.md).
"""
