"""A transformers model running inside this kernel (hub id, local folder or GGUF file).

Simulation is the paper's all-at-once logprob method: one prompt holds every token of a
record followed by a tab and a placeholder; one forward pass reads the model's exact
probabilities over the labels at every slot; the prediction is their expected value. The
few-shot prefix (shared by every record of one explanation) runs once; then all records of
one call go through the model together, right-padded in one batch (``batch_size`` at a
time). On a CPU the records of one pass are packed end to end into one row without padding,
and each layer's attention reads the prefix's keys and values once for all of them
(``shared_prefix_attention``); elsewhere each record is a right-padded row on a copy of
the prefix's KV cache. Labels are the numbers 0-10 that are ONE token in
the model's tokenizer: with digit-by-digit tokenizers (Llama, SmolLM2) "10" is two tokens
and is left out, the distribution is over 0-9. Correlation scores do not depend on that scale.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...records import NeuronRecord, SequenceSimulation
from .._common import Usage, check_cancel
from ..prompts import MAX_LABEL, PLACEHOLDER, simulation_fewshot, simulation_prefix, token_text
from ._packed import NotPackable, packed_attention, prepacked, prepacked_linears
from .base import ChatExplainer, ProgressFn


def label_token_ids(tokenizer) -> dict[int, int]:
    """Label value -> token id, for the labels 0..10 that are a single token."""
    out = {}
    for v in range(MAX_LABEL + 1):
        ids = tokenizer.encode(str(v), add_special_tokens=False)
        if len(ids) == 1:
            out[v] = ids[0]
    if not out:
        raise ValueError("the simulator's tokenizer has no single-token labels 0-10; it cannot simulate")
    return out


def record_ids(tokenizer, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
    """Prompt ids for one record (``token<TAB>placeholder`` lines) and the slot positions."""
    tab = tokenizer.encode("\t", add_special_tokens=False)
    filler = tokenizer.encode(PLACEHOLDER + "\n", add_special_tokens=False)
    ids: list[int] = []
    slots: list[int] = []
    for t in tokens:
        ids += tokenizer.encode(token_text(t), add_special_tokens=False) + tab
        slots.append(len(ids) - 1)  # the next token after the tab is the label
        ids += filler
    return ids, slots


def _simulation(tokens: Sequence[str], label_logits, values: list[float]) -> SequenceSimulation:
    """A SequenceSimulation from the label logits at each slot (rows: slots, columns: labels)."""
    import torch

    probs = torch.softmax(label_logits.double(), dim=-1)
    expected = (probs * torch.tensor(values, dtype=torch.float64, device=probs.device)).sum(-1)
    return SequenceSimulation(list(tokens), expected.tolist(), distribution_values=[list(values) for _ in tokens],
                              distribution_probabilities=probs.tolist())


def _generated(row: list[int], stop: set[int]) -> int:
    """How many tokens of a generated row were generated: up to and including the first end
    token (what follows it is padding)."""
    for i, t in enumerate(row):
        if t in stop:
            return i + 1
    return len(row)


# Configs whose logits are not just the LM head on the last hidden state: these models take
# the per-record path, which reads the model's own logits.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class LocalBackend(ChatExplainer):
    """Explain and simulate with a causal LM loaded in this process (both roles: ``Explainer``,
    ``Simulator``).

    ``LocalBackend("HuggingFaceTB/SmolLM2-360M-Instruct")``, ``LocalBackend("/path/to/folder")``,
    ``LocalBackend("/path/to/folder", gguf_file="model.Q4_1.gguf")`` (or the .gguf path itself).
    ``model``/``tokenizer`` may also be passed already loaded. ``batch_size``: records per
    forward pass when simulating.
    """

    cheap = False
    wants_gpu = True  # on Ray, each worker gets a GPU when the cluster has them

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
        batch_size: int = 16,
    ):
        if model_id_or_path is None and model is None:
            raise ValueError("LocalBackend needs a model id, a local path, a .gguf file, or model= and tokenizer=")
        if model is not None and tokenizer is None:
            raise ValueError("LocalBackend(model=...) also needs tokenizer=")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
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
        self.forward_passes = 0  # simulation forward passes so far, for benchmarks and tests
        self._fewshot: tuple[list[int], Any] | None = None  # the few-shot part's ids and KV cache
        self.packed: bool | None = None  # records packed into one row (CPU): None = not tried yet
        self._prepacked: dict[Any, Any] | None = None  # Linear -> oneDNN-prepacked weight, for packed passes
        self._weights: tuple | None = None  # the weights the two above were made from (see _derived_from)
        # Token counts, as OpenAIBackend keeps them: a chat() is one request (its prompt counted
        # once per returned sequence, its generated tokens up to and including the end token); a
        # simulate() is one request whose prompt tokens are what one request per record would
        # send (the simulation prefix + the record, as an API bills), with no completion tokens.
        self.usage = Usage(self.name)

    def __repr__(self) -> str:
        return f"LocalBackend({self.source!r}, gguf_file={self.gguf_file!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. for a Ray worker) without its lock; a model loaded from a source is
        left out and loaded again where it is unpickled (on that worker's own device)."""
        state = dict(self.__dict__)
        del state["_lock"]
        state["_fewshot"] = None
        state["packed"] = None
        state["_prepacked"] = state["_weights"] = None
        if self.source is not None:
            state["_model"] = state["_tokenizer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

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
        new = out[:, ids["input_ids"].shape[1]:].tolist()
        self.usage.add(ids["input_ids"].shape[1] * len(new), sum(_generated(row, self._stop_ids()) for row in new))
        texts = [tok.decode(row, skip_special_tokens=True) for row in new]
        return texts if temp > 0 else texts * n

    def _stop_ids(self) -> set[int]:
        ends = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ends = list(ends) if isinstance(ends, (list, tuple)) else [ends]
        return {int(e) for e in ends + [self.tokenizer.eos_token_id] if e is not None}

    # ---- the Simulator role ----
    @property
    def simulator_name(self) -> str:
        return f"{self.name} (all-at-once logprobs)"

    def simulate(self, explanation: str, token_lists: Sequence[Sequence[str]], *, max_activation: float,
                 lookup: NeuronRecord | dict[str, float] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> list[SequenceSimulation]:
        return self.simulate_all_at_once(explanation, token_lists, progress=progress, cancel=cancel)

    def simulate_all_at_once(
        self,
        explanation: str,
        token_lists: Sequence[Sequence[str]],
        *,
        reuse_prefix: bool = True,
        batched: bool = True,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> list[SequenceSimulation]:
        """Predictions for every record. ``batched`` (the default): the shared prefix once,
        then the records ``batch_size`` at a time in one pass each (packed into one row on a
        CPU, else a padded batch). ``batched=False``:
        one pass per record (on a copy of the prefix's cache when ``reuse_prefix``, else on
        the whole prompt). All three give the same predictions (to float rounding)."""
        import torch

        model, tok = self.model, self.tokenizer
        labels = label_token_ids(tok)
        prefix = tok.encode(simulation_prefix(explanation), add_special_tokens=False)
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        encoded = [record_ids(tok, tokens) for tokens in token_lists]
        longest = max((len(ids) for ids, _ in encoded), default=0)
        if limit and len(prefix) + longest > limit:
            raise ValueError(
                f"the simulation prompt needs {len(prefix) + longest} tokens but {self.name} "
                f"takes at most {limit}; use shorter records"
            )
        out = [SequenceSimulation(list(t), []) for t in token_lists]  # an empty record stays empty
        todo = [i for i, t in enumerate(token_lists) if len(t)]
        encoded, token_lists = [encoded[i] for i in todo], [token_lists[i] for i in todo]
        head = self._label_head(labels) if batched and reuse_prefix else None
        with self._lock, torch.no_grad():
            if not todo:
                return out
            if head is not None:
                sims = self._batched(prefix, encoded, token_lists, head, list(map(float, labels)), progress, cancel)
            else:
                sims = self._one_by_one(prefix, encoded, token_lists, labels, reuse_prefix, progress, cancel)
        for i, sim in zip(todo, sims):
            out[i] = sim
        self.usage.add(sum(len(prefix) + slots[-1] + 1 for _, slots in encoded), 0)
        return out

    def _label_head(self, labels: dict[int, int]):
        """(base model, label rows of the LM head, their bias), or None where the model's logits
        are more than the LM head on the last hidden state."""
        model = self.model
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        base = getattr(model, "base_model", None)
        if out is None or base is None or base is model or any(getattr(model.config, a, None) for a in _LOGIT_TRANSFORMS):
            return None
        ids = list(labels.values())
        bias = getattr(out, "bias", None)
        return base, out.weight[ids], (bias[ids] if bias is not None else None)

    def _batched(self, prefix, encoded, token_lists, head, values, progress, cancel) -> list[SequenceSimulation]:
        import torch

        base, weight, bias = head
        device = weight.device
        self._derived_from(base)
        cache = self._prefix_cache(base, prefix, device)
        out: list[SequenceSimulation] = []
        for start in range(0, len(encoded), self.batch_size):
            check_cancel(cancel)
            chunk = encoded[start : start + self.batch_size]
            hidden = self._packed_pass(base, cache, chunk, len(prefix)) if self._can_pack(base, device) else None
            if hidden is None:
                hidden = self._padded_pass(base, cache, chunk)
            self.forward_passes += 1
            logits = torch.nn.functional.linear(hidden, weight, bias)  # labels only
            at = 0
            for (_, slots), tokens in zip(chunk, token_lists[start : start + len(chunk)]):
                out.append(_simulation(tokens, logits[at : at + len(slots)], values))
                at += len(slots)
            if progress:
                progress(len(out), len(encoded), "simulating")
        return out

    def _derived_from(self, base) -> None:
        """Forgets the few-shot KV cache and the prepacked weights when a weight of the model
        has changed since they were made (replaced, or changed in place)."""
        weights = tuple((id(p), p._version) for p in base.parameters())
        if weights != self._weights:
            self._fewshot = self._prepacked = None
            self._weights = weights

    def _can_pack(self, base, device) -> bool:
        """Whether records can be packed into one row: on a CPU, for a model on transformers'
        ``sdpa`` attention whose forward takes position ids (and that has not refused yet)."""
        import torch

        if self.packed is None:
            self.packed = (
                device.type == "cpu"
                and getattr(base.config, "_attn_implementation", None) == "sdpa"
                and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
                and "position_ids" in inspect.signature(base.forward).parameters
            )
        return self.packed

    def _packed_pass(self, base, cache, chunk, n_prefix: int):
        """The final hidden states at every slot of the records in ``chunk`` (in order), run as
        one row of records packed end to end after ``cache``; None where the model's attention
        turns out not to allow it (this backend then never packs again)."""
        import torch

        if not hasattr(cache, "layers"):  # a cache that is not a list of (keys, values) per layer
            self.packed = False
            return None
        device = base.device
        rows = [ids[: slots[-1] + 1] for ids, slots in chunk]  # what follows a last slot changes nothing
        segments, at = [], 0
        for r in rows:
            segments.append((at, at + len(r)))
            at += len(r)
        ids = torch.tensor([[t for r in rows for t in r]], device=device)
        positions = torch.tensor([[n_prefix + j for r in rows for j in range(len(r))]], device=device)
        try:
            if self._prepacked is None:
                self._prepacked = prepacked(base, len(ids[0]))
            with packed_attention(base.config, cache, segments), prepacked_linears(self._prepacked):
                hidden = base(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
        except NotPackable:
            self.packed = False
            return None
        at_slots = [a + s for (a, _), (_, slots) in zip(segments, chunk) for s in slots]
        return hidden[torch.tensor(at_slots, device=device)]

    def _padded_pass(self, base, cache, chunk):
        """The final hidden states at every slot of the records in ``chunk`` (in order), run as
        a right-padded batch on copies of ``cache``."""
        import torch

        device = base.device
        rows = [ids[: slots[-1] + 1] for ids, slots in chunk]  # what follows a last slot changes nothing
        width = max(len(r) for r in rows)
        # right padding: under the causal mask no real token sees a pad, so no mask is needed
        batch = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=device)
        kv = copy.deepcopy(cache)
        kv.batch_repeat_interleave(len(rows))
        hidden = base(input_ids=batch, past_key_values=kv, use_cache=True).last_hidden_state
        which = torch.tensor([i for i, (_, slots) in enumerate(chunk) for _ in slots], device=device)
        where = torch.tensor([s for _, slots in chunk for s in slots], device=device)
        return hidden[which, where]

    def _prefix_cache(self, base, prefix: list[int], device):
        """The KV cache of ``prefix``. The few-shot part every simulation prompt starts with is
        run once per backend and kept; each call runs only the rest (its explanation's header)
        on a copy. Where the tokenizer joins the two parts differently, the whole prefix runs."""
        import torch

        if self._fewshot is None:
            # its last token is left out: at the boundary a tokenizer may merge it with what
            # follows (SmolLM2 writes "\n\n" alone, but "\n", "\n" before "Neuron")
            ids = self.tokenizer.encode(simulation_fewshot(), add_special_tokens=False)[:-1]
            kv = base(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
            self.forward_passes += 1
            self._fewshot = (ids, kv)
        ids, kv = self._fewshot
        if prefix[: len(ids)] != ids or len(prefix) == len(ids):
            cache = base(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
        else:
            cache = copy.deepcopy(kv)
            base(input_ids=torch.tensor([prefix[len(ids):]], device=device), past_key_values=cache, use_cache=True)
        self.forward_passes += 1
        return cache

    def _one_by_one(self, prefix, encoded, token_lists, labels, reuse_prefix, progress, cancel):
        import torch

        model = self.model
        device = model.device
        values, label_ids = list(map(float, labels)), list(labels.values())
        # compute logits only at the label slots (and none for the prefix) where the model can
        slots_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        cache = None
        if reuse_prefix:
            head = {"logits_to_keep": 1} if slots_only else {}
            cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **head).past_key_values
            self.forward_passes += 1
        out: list[SequenceSimulation] = []
        for i, tokens in enumerate(token_lists):
            check_cancel(cancel)
            ids, slots = encoded[i]
            offset = 0 if reuse_prefix else len(prefix)
            keep = torch.tensor([offset + s for s in slots], device=device)
            head = {"logits_to_keep": keep} if slots_only else {}
            if reuse_prefix:
                res = model(input_ids=torch.tensor([ids], device=device), past_key_values=copy.deepcopy(cache),
                            use_cache=True, **head)
            else:
                res = model(input_ids=torch.tensor([prefix + ids], device=device), use_cache=False, **head)
            rows = res.logits[0] if slots_only else res.logits[0, keep]  # one row per slot
            self.forward_passes += 1
            out.append(_simulation(tokens, rows[:, label_ids], values))
            if progress:
                progress(i + 1, len(token_lists), "simulating")
        return out
