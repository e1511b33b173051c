"""The explanation store, as the explore layer (and older code) imports it: it lives in
:mod:`neuronwidget.explanations.store`, next to the method whose entry points write it."""

from ..explanations.store import (COLUMNS, DB_NAME, ExplanationStore, check_fts5, get_store, model_key,  # noqa: F401
                                  query_terms, record)

__all__ = ["ExplanationStore", "get_store", "record", "query_terms", "model_key", "check_fts5", "COLUMNS", "DB_NAME"]
