"""Bringing files into the catalog: intake, folder adoption, watching, stability."""
