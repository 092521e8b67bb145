"""Controlled export of footage and the DPO holdings report (docs/export.md).

Above store and retention, below app: it reads the catalog (through
:mod:`edge_agent.store.exports` only), probes media and writes to a target
the operator names.
"""
