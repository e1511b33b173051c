// GENERATED from neuronwidget/widgets/present.py's HEADINGS (python -m neuronwidget.widgets.present headings > js/headings.ts); do not edit.
export const HEADINGS = {
  "explanations": "Explanations",
  "test": "Test your explanation",
  "try": "Try your text",
  "effect": "Effect: what zeroing or clamping this neuron does",
  "effect_note": "Type text in “Try your text”: each token shows how much zeroing this neuron there and before changes the model's next-token prediction.",
  "steer": "Steer: the model continues a prompt with this neuron clamped at every token",
  "histogram": "Activation histogram",
  "connections": "Connections (from the weights, no corpus)",
  "conn_input": "Input: tokens that excite it most",
  "conn_input_negative": "Input: tokens that drive it most negative",
  "conn_promoted": "Output: tokens it promotes",
  "conn_suppressed": "Output: tokens it suppresses",
  "conn_upstream": "Upstream neurons (strongest)",
  "conn_downstream": "Downstream neurons (strongest)",
  "conn_nearest": "Nearest latents (decoder cosine)",
  "explorer_hint": "Click or focus a token: the neurons that fire most there, over all layers (activation ÷ the neuron's max over the index).",
  "explorer_none": "No neuron fires above zero here.",
  "explorer_saved": "Run the notebook to click tokens and open neurons.",
  "search": "Search explanations",
  "search_none": "No explanation matches these words.",
  "no_explanation_yet": "no explanation yet"
} as const;
