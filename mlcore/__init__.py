"""mlcore: correlation-based cross training of merged nucleus datasets.

A plain library: it never imports Django, Celery or anything from ``webapp``.
"""

__version__ = "0.1.0"
