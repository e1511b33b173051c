"""The model being explained: loading (hub id, folder, object, "tiny") and activation capture.

Nothing here knows about corpora, indexes or explanations; everything above asks this
package for activations through :func:`run_mlp_hooks` / :func:`mlp_activations`.
"""

from .capture import mlp_activations, run_mlp_hooks
from .loading import (
    HUB_IDS,
    TINY,
    TINY_NAME,
    TINY_NOTE,
    LoadedModel,
    ModelUnavailableError,
    default_device,
    demo_model,
    gpt2_available,
    load_model,
)

__all__ = [
    "HUB_IDS", "TINY", "TINY_NAME", "TINY_NOTE", "LoadedModel", "ModelUnavailableError", "default_device",
    "demo_model", "gpt2_available", "load_model", "mlp_activations", "run_mlp_hooks",
]
