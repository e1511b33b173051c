"""A transformers model running inside this kernel (hub id, local folder or GGUF file)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class LocalBackend:
    """Explain and simulate with a causal LM loaded in this process.

    ``LocalBackend("HuggingFaceTB/SmolLM2-360M-Instruct")``, ``LocalBackend("/path/to/folder")``,
    ``LocalBackend("/path/to/folder", gguf_file="model.Q4_1.gguf")`` (or the .gguf path itself).
    ``model``/``tokenizer`` may also be passed already loaded. Simulation is the paper's
    all-at-once logprob method: one forward pass per record, exact label probabilities.
    """

    def __init__(
        self,
        model_id_or_path: str | Path | None = None,
        *,
        gguf_file: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        device: str | None = None,
        temperature: float = 1.0,
        max_tokens: int = 60,
        name: str | None = None,
    ):
        if model_id_or_path is None and model is None:
            raise ValueError("LocalBackend needs a model id, a local path, a .gguf file, or model= and tokenizer=")
        if model is not None and tokenizer is None:
            raise ValueError("LocalBackend(model=...) also needs tokenizer=")
        path = str(model_id_or_path) if model_id_or_path is not None else None
        if path and path.endswith(".gguf") and gguf_file is None:
            p = Path(path)
            path, gguf_file = str(p.parent), p.name
        self.source = path
        self.gguf_file = gguf_file
        self.device = device
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.RLock()  # one generation / forward pass at a time
        label = name or (f"{path}:{gguf_file}" if gguf_file else path) or type(model).__name__
        self.name = f"local: {label}"
        self.forward_passes = 0  # counted by the simulator, for benchmarks and tests

    def __repr__(self) -> str:
        return f"LocalBackend({self.source!r}, gguf_file={self.gguf_file!r})"

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
            try:
                tok = AutoTokenizer.from_pretrained(self.source, **kwargs)
                model = AutoModelForCausalLM.from_pretrained(self.source, **kwargs)
            except OSError as e:
                raise ValueError(
                    f"could not load {self.source!r}{' / ' + self.gguf_file if self.gguf_file else ''}: {e}. "
                    "Give a local folder, a .gguf file, or a hub id that is downloadable here"
                ) from None
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = model.to(device).eval()
            self._tokenizer = tok

    @property
    def model(self):
        self._load()
        return self._model

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    def chat(self, messages: list[dict[str, str]], *, n: int = 1, max_tokens: int | None = None,
             temperature: float | None = None) -> list[str]:
        """``n`` sampled answers (greedy when temperature is 0), generated with the chat template."""
        import torch

        tok, model = self.tokenizer, self.model
        temp = self.temperature if temperature is None else temperature
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # base models: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        ids = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        gen = {"max_new_tokens": max_tokens or self.max_tokens, "pad_token_id": tok.pad_token_id or tok.eos_token_id}
        if temp > 0:
            gen.update(do_sample=True, temperature=temp, num_return_sequences=n)
        else:
            gen.update(do_sample=False)
        with self._lock, torch.no_grad():
            out = model.generate(**ids, **gen)
        texts = [tok.decode(row[ids["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]
        return texts if temp > 0 else texts * n
