"""Loading a trained model for inference and generating text with it.

Used in child processes only: the evaluation gate of the training child
(``services.training.gate``) and ``python -m services.generation`` (``personad ask``).
torch, transformers and peft are imported inside the functions, so importing this module
stays light.

A model is a base model spec (see ``services.training.base_model``: ``embedded:smollm2``,
a ``.gguf`` file, a hub id in the local cache) or a full model directory, optionally with a
LoRA adapter directory applied on top of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from services.training.base_model import resolve_base_model
from services.training.errors import BadInputError

log = structlog.get_logger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def pick_device(name: str) -> Any:
    """The torch device of ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``;
    :class:`BadInputError` for ``cuda`` without a CUDA device."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA device is available")
    return torch.device(name)


def pick_dtype(dtype: str, device: Any) -> Any:
    """``auto``: float32 on a CPU (exact), bfloat16 on a GPU that supports it."""
    import torch

    if dtype == "auto":
        cuda = device.type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    except KeyError:
        raise BadInputError(f"unknown dtype {dtype!r} (float32, bfloat16, float16, auto)") from None


def load_for_inference(
    model: str | Path,
    *,
    adapter: Path | None = None,
    cache_dir: Path,
    device: str = "cpu",
    dtype: str = "auto",
    merge: bool = False,
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for ``model`` (a base spec or a full model directory),
    with the LoRA adapter at ``adapter`` applied when given: kept apart (a peft model, as the
    gate scores it), or with ``merge`` folded into the weights once (a plain model that
    answers as the adapter does, without the adapter's extra operations at every token).
    The tokenizer is the adapter's when it has one (training saves it there), else the
    model's. :class:`BadInputError` when either cannot be found or used."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = str(model)
    path = Path(spec).expanduser()
    if (
        path.is_dir()
        and (path / "adapter_config.json").is_file()
        and not (path / "config.json").is_file()
    ):
        raise BadInputError(
            f"{spec} is a LoRA adapter, not a model: pass it as the adapter and its base as "
            "the model"
        )
    model_dir = resolve_base_model(spec, cache_dir)
    torch_device = pick_device(device)
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=pick_dtype(dtype, torch_device)
    )
    tokenizer_dir = model_dir
    if adapter is not None:
        loaded = apply_adapter(loaded, adapter, merge=merge)
        if _has_tokenizer(adapter):
            tokenizer_dir = adapter
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    loaded.to(torch_device)
    loaded.eval()
    log.info("model loaded", model=str(model_dir), adapter=str(adapter) if adapter else None)
    return loaded, tokenizer


def apply_adapter(model: Any, adapter: Path, *, merge: bool = False) -> Any:
    """``model`` with the LoRA adapter at ``adapter`` (a peft model, in eval mode), or with
    ``merge`` folded into ``model``'s weights (a plain model, as ``ask`` serves it)."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise BadInputError(f"{adapter}: not a LoRA adapter (no adapter_config.json)")
    adapted = PeftModel.from_pretrained(model, adapter).eval()
    return adapted.merge_and_unload() if merge else adapted


def default_stops(tokenizer: Any) -> list[str]:
    """The eos token and the stop tokens of the model's family schema (``etc/schemas``),
    the family told by the tokenizer's chat template and name; just eos when unknown."""
    from services.schemas import SchemaError, load_schema
    from services.schemas.detect import family_of
    from services.schemas.model_files import ModelInfo

    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    info = ModelInfo(
        path=Path(name or "."),
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        names=(name, Path(name).name) if name else (),
    )
    with contextlib.suppress(SchemaError):
        stops += load_schema(family_of(info)).stop
    return list(dict.fromkeys(s for s in stops if s))


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first stop string it contains."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(ends)] if ends else text


def _stop_ids(tokenizer: Any, stops: Sequence[str]) -> tuple[list[int], list[str]]:
    """(token ids that end generation: single-token stops and eos, stops of several tokens)."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.convert_tokens_to_ids(s) for s in stops if s in vocab]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids, [s for s in stops if s not in vocab]


def _pad_id(tokenizer: Any, stop_ids: Sequence[int]) -> int:
    """The token generation pads finished sequences with (never read as answer text)."""
    return int(
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids or [0])[0]
    )


def _generate_kwargs(
    tokenizer: Any, input_ids: Any, stops: Sequence[str], temperature: float, no_repeat: int
) -> dict[str, Any]:
    """``model.generate``'s options: greedy or sampled, stops, n-gram blocking."""
    import torch

    stop_ids, multi = _stop_ids(tokenizer, stops)
    kwargs: dict[str, Any] = {
        "eos_token_id": sorted(set(stop_ids)) or None,
        "pad_token_id": _pad_id(tokenizer, stop_ids),
        "attention_mask": torch.ones_like(input_ids),
    }
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if no_repeat > 0:
        # Only within the answer: transformers' no_repeat_ngram_size counts the prompt too,
        # so a model could not repeat a name from the memories it was shown.
        kwargs["logits_processor"] = _answer_ngram_blocker(no_repeat, input_ids.shape[1])
    if multi:
        kwargs.update(stop_strings=multi, tokenizer=tokenizer)
    return kwargs


def _answer_ngram_blocker(n: int, prompt_len: int) -> Any:
    """A logits processor list that forbids any n-gram of the answer (the tokens after the
    first ``prompt_len``) to occur twice in it."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class NoRepeatInAnswer(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row in range(input_ids.shape[0]):
                banned = banned_next_tokens(input_ids[row, prompt_len:].tolist(), n)
                if banned:
                    scores[row, sorted(banned)] = -float("inf")
            return scores

    return LogitsProcessorList([NoRepeatInAnswer()])


def banned_next_tokens(tokens: Sequence[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``tokens``."""
    if n < 1 or len(tokens) < n - 1:
        return set()
    if n == 1:
        return set(tokens)
    tail = tuple(tokens[len(tokens) - (n - 1) :])
    return {
        tokens[i + n - 1]
        for i in range(len(tokens) - n + 1)
        if tuple(tokens[i : i + n - 1]) == tail
    }


class Generated(NamedTuple):
    """A model's answer: the text, and whether it ended at eos or a stop string
    (``stopped``) rather than by running out of new tokens."""

    text: str
    stopped: bool


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    stop: Sequence[str] | None = None,
    no_repeat_ngram: int = 0,
    batch_size: int = 8,
) -> list[Generated]:
    """:func:`generate_answer` for each of ``prompts``, ``batch_size`` at a time (left-padded,
    prompts of similar length together): greedy, the answers each prompt gets alone (sampled
    ones draw from other random streams), several times faster on a CPU, where one sequence
    at a time leaves the model's matrix products mostly idle."""
    import torch

    stops = default_stops(tokenizer) if stop is None else list(stop)
    if max_new_tokens <= 0:
        return [Generated("", False) for _ in prompts]
    encoded = []
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        encoded.append(ids or [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0])
    stop_ids, _ = _stop_ids(tokenizer, stops)
    pad, ending = _pad_id(tokenizer, stop_ids), set(stop_ids)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    size = max(1, batch_size)
    out: dict[int, Generated] = {}
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows])
        kwargs = _generate_kwargs(tokenizer, input_ids, stops, temperature, no_repeat_ngram)
        mask = [[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows]
        kwargs["attention_mask"] = torch.tensor(mask, device=device)
        with torch.no_grad():
            written = model.generate(
                input_ids=input_ids.to(device), max_new_tokens=max_new_tokens, **kwargs
            )
        for row, i in enumerate(rows):
            out[i] = _answer_of(tokenizer, written[row, width:].tolist(), stops, ending)
    return [out[i] for i in range(len(encoded))]


def _answer_of(
    tokenizer: Any, written: Sequence[int], stops: Sequence[str], stop_ids: set[int]
) -> Generated:
    """One row of a batch's new tokens: up to its first stop token (the padding after it is
    not its own), cut at a stop string; stopped when either ended it."""
    tokens = [int(t) for t in written]
    ended = next((k for k, t in enumerate(tokens) if t in stop_ids), None)
    if ended is not None:
        tokens = tokens[: ended + 1]
    text: str = tokenizer.decode(tokens, skip_special_tokens=False)
    cut = cut_at_stop(text, stops)
    return Generated(cut, ended is not None or cut != text)


def generate(
    model: Any,
    tokenizer: Any,
    prompt_text: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    stop: Sequence[str] | None = None,
    no_repeat_ngram: int = 0,
) -> str:
    """The text ``model`` writes after ``prompt_text`` (already chat-rendered through the
    generation prompt; tokenized without added special tokens): greedy at temperature 0,
    sampled above; it ends at eos or a stop string (``default_stops`` when None), which is
    not included. ``no_repeat_ngram`` > 0 forbids repeating any n-gram of that size (small
    models otherwise loop on one sentence). :func:`generate_answer` also says whether it
    stopped."""
    return generate_answer(
        model, tokenizer, prompt_text, max_new_tokens, temperature, stop, no_repeat_ngram
    ).text


def generate_answer(
    model: Any,
    tokenizer: Any,
    prompt_text: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    stop: Sequence[str] | None = None,
    no_repeat_ngram: int = 0,
) -> Generated:
    """:func:`generate`'s text, and whether generation ended at eos or a stop string
    before ``max_new_tokens`` ran out (a batch of one of :func:`generate_answers`)."""
    return generate_answers(
        model, tokenizer, [prompt_text], max_new_tokens, temperature, stop, no_repeat_ngram
    )[0]
