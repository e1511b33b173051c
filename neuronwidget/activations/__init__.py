"""What neurons do over text: corpus windows, the one-pass index, its store, OpenAI's
published records, and the :class:`Engine` facade over a subject model.

Everything that shows a neuron reads it through the :class:`RecordSource` protocol, so a
locally built :class:`NeuronIndex` and OpenAI's :class:`PublishedIndex` are interchangeable.
"""

from .corpus import Corpus, CorpusUnavailableError, as_corpus, bundled_corpus, default_corpus
from .engine import Engine
from .source import RecordSource
from .store import CorruptIndexError, NeuronIndex

__all__ = ["Corpus", "CorpusUnavailableError", "CorruptIndexError", "Engine", "NeuronIndex", "RecordSource",
           "as_corpus", "bundled_corpus", "default_corpus"]
