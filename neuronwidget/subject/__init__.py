"""The model being explained: the SubjectModel protocol, model families (GPT-2, gated-MLP
decoders), loading (hub id, folder, GGUF, object, "tiny", "smollm2-135m"), token strings and
bytes, the weights fingerprint, and activation capture.

Nothing here knows about corpora, indexes or explanations; everything above asks this
package for activations through :func:`run_mlp_hooks` / :func:`mlp_activations`, and for
interventions (neurons' values replaced: effects, steering, attribution) through
:mod:`.intervene`, which uses the same hooks.
"""

from .base import FAMILIES, Family, SubjectModel, family_for, supported
from .capture import mlp_activations, run_mlp_hooks
from .intervene import Edit, ablate_at, attribution, edited_logits, greedy
from .loading import (
    HUB_IDS,
    SMOLLM2_NOTE,
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
from .smollm2 import SMOLLM2, SMOLLM2_NAME, smollm2_available, smollm2_folder
from .tokens import bytes_to_unicode, group_characters, unicode_to_bytes

__all__ = [
    "FAMILIES", "Family", "SubjectModel", "family_for", "supported",
    "HUB_IDS", "SMOLLM2", "SMOLLM2_NAME", "SMOLLM2_NOTE", "TINY", "TINY_NAME", "TINY_NOTE", "LoadedModel",
    "ModelUnavailableError", "default_device", "demo_model", "gpt2_available", "load_model",
    "mlp_activations", "run_mlp_hooks", "Edit", "edited_logits", "ablate_at", "greedy", "attribution", "smollm2_available", "smollm2_folder",
    "bytes_to_unicode", "unicode_to_bytes", "group_characters",
]
