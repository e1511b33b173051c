"""What NeuronView takes from the explore layer: its "connections" payload (weight-based token
and neuron lists) and the entry that records its new explanations in the searchable store.
A module of its own so that NeuronView and the Explorer (which opens NeuronViews) do not
import each other."""

from __future__ import annotations

from typing import Any

from neuronwidget.explore import store as _store


def connections_payload(engine: Any, layer: int, neuron: int, k: int = 8) -> dict[str, Any] | None:
    """NeuronView's "connections" section: weight-based token and neuron lists (None without a model)."""
    if engine is None:
        return None
    from neuronwidget.explore.connections import connections

    try:
        lm = engine.lm
        c = connections(lm.model, layer, neuron, token_strings=lm.token_strings(), k=k,
                        model_name=_store.model_key(lm.short_name))
    except Exception as e:  # a model family without these weights: say so, never break the view
        return {"error": f"connections unavailable: {type(e).__name__}: {e}"}
    return shown(c.to_dict())


def shown(d: dict[str, Any]) -> dict[str, Any]:
    """The connections payload with what is shown of each entry (present.py's number format)."""
    import json

    from neuronwidget.widgets.present import display_token, format_activation

    for key, items in d.items():
        if not isinstance(items, list):
            continue
        for x in items:
            if isinstance(x, dict) and "token" in x:
                x["text"] = display_token(x["token"])
                x["tip"] = f"{json.dumps(x['token'], ensure_ascii=False)}: {format_activation(x['value'])}"
            elif isinstance(x, dict) and "layer" in x:
                x["label"] = f"L{x['layer']}/N{x['neuron']} ({format_activation(x['value'])})"
    return d


def record_card(model_name: str, layer: int, neuron: int, scored: Any, side: str = "positive") -> None:
    """Record an explanation made in a view into the searchable store; never breaks the view."""
    try:
        _store.record(scored, model_name, layer, neuron, side=side if side in ("positive", "negative") else "positive",
                      source="NeuronView")
    except Exception:  # a read-only cache folder must not stop the user from seeing the card
        pass


__all__ = ["connections_payload", "record_card"]
