"""Auditor tables of stats/ and the reconciliation that must hold before they are written."""
