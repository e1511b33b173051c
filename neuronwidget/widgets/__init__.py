"""The notebook views: NeuronView (everything about one neuron), TokenView (coloured
tokens for any values) and ExplanationCard (an explanation with its score)."""

from neuronwidget.widgets.views import ExplanationCard, TokenView


def __getattr__(name: str):
    if name == "NeuronView":  # imports the engine; only when asked for
        from neuronwidget.widgets.neuron_view import NeuronView

        return NeuronView
    if name == "export_html":
        from neuronwidget.widgets.export import export_html

        return export_html
    raise AttributeError(f"module 'neuronwidget.widgets' has no attribute {name!r}")


__all__ = ["NeuronView", "TokenView", "ExplanationCard", "export_html"]
