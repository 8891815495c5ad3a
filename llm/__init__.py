"""Parametrized dual method (CAID) on real language models (in progress; see issues)."""
