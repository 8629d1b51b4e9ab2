"""The memory planner: which training strategy fits the device, before anything is loaded.

Pure functions of a model's shapes (:class:`ModelShape`, from ``config.json``, GGUF
metadata or safetensors headers: see ``model_shape``), the strategy, the precision, the
sequence length, the micro-batch, gradient checkpointing and the LoRA rank. No torch.

Strategies, cheapest last for each kind of run (:data:`STRATEGIES`):

- ``full``: every weight trained; fp32 master weights, fp32 gradients, AdamW's two fp32
  states (16 bytes a parameter), bf16 autocast on a GPU;
- ``full-8bit``: the same with bitsandbytes' 8-bit AdamW (paged on a GPU): 10 bytes a parameter;
- ``lora``: the base frozen in bf16 (GPU) or fp32 (CPU), fp32 adapters with their AdamW;
- ``qlora``: the base's linear layers in 4-bit NF4 with double quantization (about 4.13 bits
  a weight; embeddings, norms and the output layer stay in the compute dtype), fp32 adapters.

Peak = weights + trainable state (gradients, optimizer) + activations of one micro-batch
(every layer's when gradient checkpointing is off; with it, one hidden state per layer and
one layer's at recomputation) + logits at the target positions (about half the tokens),
the last three with 10% for the allocator's fragmentation; on a CPU at least the weights
in full precision plus the weight files mapped while they load. Plus the runtime (the CUDA
context, or on a CPU the interpreter with torch, transformers and peft imported). The
estimate is checked against measured peaks in ``bench/MEMORY.md``.

:func:`choose` takes the best strategy of the run's kind that fits ``device_gib`` with
:data:`HEADROOM` to spare, lowering the micro-batch (samples per forward pass) first and
turning gradient checkpointing on (largest micro-batch first), while ``batch_size x
gradient_accumulation_steps`` samples still make an optimizer step. When nothing fits it
says so with the numbers and the ways out (:func:`refusal`). :func:`fallback` is the next
cheaper plan after an out-of-memory failure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Strategy = Literal["full", "full-8bit", "lora", "qlora"]
STRATEGIES: dict[str, tuple[Strategy, ...]] = {
    "full": ("full", "full-8bit"),
    "lora": ("lora", "qlora"),
}
GIB = 1024**3
HEADROOM = 0.10  # a plan fits when its peak is at most (1 - HEADROOM) x the device's memory
FRAGMENTATION = 1.10
CUDA_RUNTIME_GIB = 0.75  # CUDA context and kernels' workspaces
# Measured here (bench/memory.py): a training child's resident memory with torch,
# transformers and peft imported and the tokenizer loaded, before the model is.
CPU_RUNTIME_GIB = 0.45
NF4_BYTES = 0.5 + 0.0161  # 4 bits, an fp8 absmax per 64 weights, double-quantized
ACTIVATION_ELEMENTS = (18, 4)  # per token and layer: 18 x hidden + 4 x intermediate
LORA_ACTIVATION_ELEMENTS = (6,)  # more with adapters: 6 x hidden + intermediate
# Logits are computed only at target (completion) positions: about half a chat sample's
# tokens; each costs the logit, its fp32 copy for the loss and their gradients.
TARGET_SHARE = 0.5
LOGIT_BYTES = 12


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a decoder: its parameters and the sizes of its layers."""

    params: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // max(self.heads, 1)

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the output layer (one matrix when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def linear_params(self) -> int:
        """The weights of the blocks' linear layers (what 4-bit quantizes)."""
        return max(0, self.params - self.embedding_params - (2 * self.layers + 1) * self.hidden)

    def lora_params(self, r: int) -> int:
        """Adapter weights of rank ``r`` on every linear layer of every block."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
        return self.layers * sum(r * (a + b) for a, b in shapes)


@dataclass(frozen=True)
class Settings:
    """A run's settings that change its memory."""

    kind: str  # lora | full
    device: str  # cuda | cpu
    bf16: bool
    seq_len: int
    micro_batch: int  # samples per forward pass
    effective_batch: int  # samples per optimizer step
    checkpointing: bool
    lora_r: int
    load_bytes: int = 0  # weight files mapped while the model loads into host memory (CPU)


@dataclass(frozen=True)
class Estimate:
    """A strategy's peak memory and its parts, in GiB."""

    strategy: Strategy
    micro_batch: int
    gradient_checkpointing: bool
    weights: float
    trainable: float
    activations: float
    logits: float
    loading: float
    runtime: float
    peak: float
    trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def estimate(shape: ModelShape, strategy: Strategy, s: Settings) -> Estimate:
    """The peak memory of training ``shape`` with ``strategy`` under ``s``."""
    compute = 2 if s.bf16 else 4  # bytes of an activation, and of a frozen LoRA base's weight
    if strategy in ("full", "full-8bit"):
        weights = 4.0 * shape.params
        trainable_params = shape.params
        state = 4 + (2 if strategy == "full-8bit" else 8)  # gradient + AdamW's two states
    else:
        if strategy == "qlora":
            rest = shape.params - shape.linear_params
            weights = NF4_BYTES * shape.linear_params + compute * rest
        else:
            weights = float(compute * shape.params)
        trainable_params = shape.lora_params(s.lora_r)
        state = 4 + 4 + 8  # fp32 adapter, its gradient, AdamW's two states
    tokens = s.micro_batch * s.seq_len
    per_layer = ACTIVATION_ELEMENTS[0] * shape.hidden + ACTIVATION_ELEMENTS[1] * shape.intermediate
    if strategy in ("lora", "qlora"):  # each adapter keeps its (dropped-out) input
        per_layer += LORA_ACTIVATION_ELEMENTS[0] * shape.hidden + shape.intermediate
    if s.checkpointing:
        act_elements = tokens * (shape.layers * shape.hidden + per_layer)
    else:
        act_elements = tokens * shape.layers * per_layer
    activations = act_elements * compute
    logits = float(LOGIT_BYTES * TARGET_SHARE * tokens * shape.vocab)
    runtime = CUDA_RUNTIME_GIB if s.device == "cuda" else CPU_RUNTIME_GIB
    trainable = float(trainable_params * state)
    work = (weights + (trainable + activations + logits) * FRAGMENTATION) / GIB
    if s.device == "cpu":  # the weight files' pages stay mapped (measured: bench/MEMORY.md)
        work += s.load_bytes / GIB
    # On a CPU the weight files are mapped into memory while the weights are copied out, in
    # full precision (a 4-bit base is quantized from them, layer by layer).
    loaded = weights if strategy in ("full", "full-8bit") else compute * shape.params
    loading = (loaded + s.load_bytes) / GIB if s.device == "cpu" else 0.0
    return Estimate(
        strategy=strategy,
        micro_batch=s.micro_batch,
        gradient_checkpointing=s.checkpointing,
        weights=weights / GIB,
        trainable=trainable / GIB,
        activations=activations / GIB,
        logits=logits / GIB,
        loading=loading,
        runtime=runtime,
        peak=max(work, loading) + runtime,
        trainable_params=trainable_params,
    )


def fits(peak_gib: float, device_gib: float) -> bool:
    return peak_gib <= device_gib * (1 - HEADROOM)


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen strategy and its numbers, or (``fits`` False) the cheapest that did not fit
    and why. ``alternatives``: every strategy's best peak, for people deciding."""

    strategy: Strategy
    fits: bool
    peak_gib: float
    device_gib: float
    device: str
    device_source: str
    micro_batch: int
    gradient_accumulation_steps: int
    effective_batch: int
    gradient_checkpointing: bool
    estimate: Estimate
    alternatives: dict[str, float]
    params: int
    devices: int = 1
    reason: str = ""
    fallback_from: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimate"] = self.estimate.to_dict()
        out["peak_gib"] = round(self.peak_gib, 2)
        out["device_gib"] = round(self.device_gib, 2)
        out["alternatives"] = {k: round(v, 2) for k, v in self.alternatives.items()}
        return out


def _micro_batches(requested: int, effective: int) -> list[int]:
    """Divisors of the effective batch, at most ``requested``, largest first."""
    top = max(1, min(requested, effective))
    return [m for m in range(top, 0, -1) if effective % m == 0] or [1]


def _options(s: Settings, fixed: bool) -> list[Settings]:
    """Micro-batch and checkpointing choices, best first: the largest micro-batch first,
    each as configured, then (unless the user fixed it) with gradient checkpointing on."""
    modes = [s.checkpointing] if fixed or s.checkpointing else [False, True]
    return [
        replace(s, micro_batch=m, checkpointing=ckpt)
        for m in _micro_batches(s.micro_batch, s.effective_batch)
        for ckpt in modes
    ]


def choose(
    shape: ModelShape,
    s: Settings,
    *,
    device_gib: float,
    device_source: str,
    checkpointing_fixed: bool = False,
    strategies: tuple[Strategy, ...] | None = None,
    devices: int = 1,
) -> MemoryPlan:
    """The best plan of ``s.kind`` that fits ``device_gib`` (see the module docstring);
    ``checkpointing_fixed``: the user set gradient checkpointing, the planner keeps it."""
    order = strategies or STRATEGIES[s.kind]
    options = _options(s, checkpointing_fixed)
    best: dict[str, float] = {}
    chosen: tuple[Strategy, Settings, Estimate] | None = None
    for strategy in order:
        for o in options:
            e = estimate(shape, strategy, o)
            best[strategy] = min(best.get(strategy, math.inf), e.peak)
            if chosen is None and fits(e.peak, device_gib):
                chosen = (strategy, o, e)
        if chosen is not None:
            break
    for other in ("full", "full-8bit", "lora", "qlora"):
        if other not in best:
            best[other] = min(
                estimate(shape, other, replace(s, micro_batch=1, checkpointing=True)).peak,
                math.inf,
            )
    if chosen is None:
        cheapest = replace(
            s, micro_batch=1, checkpointing=True if not checkpointing_fixed else s.checkpointing
        )
        e = estimate(shape, order[-1], cheapest)
        plan = _plan(order[-1], cheapest, e, shape, device_gib, device_source, best, devices)
        return replace(plan, fits=False, reason=refusal(plan, s.kind))
    return _plan(*chosen, shape, device_gib, device_source, best, devices)


def _plan(
    strategy: Strategy,
    s: Settings,
    e: Estimate,
    shape: ModelShape,
    device_gib: float,
    device_source: str,
    alternatives: dict[str, float],
    devices: int,
) -> MemoryPlan:
    return MemoryPlan(
        strategy=strategy,
        fits=fits(e.peak, device_gib),
        peak_gib=e.peak,
        device_gib=device_gib,
        device=s.device,
        device_source=device_source,
        micro_batch=s.micro_batch,
        gradient_accumulation_steps=max(1, s.effective_batch // s.micro_batch),
        effective_batch=s.effective_batch,
        gradient_checkpointing=s.checkpointing,
        estimate=e,
        alternatives=dict(alternatives),
        params=shape.params,
        devices=devices,
    )


def refusal(plan: MemoryPlan, kind: str) -> str:
    """Why nothing fits, with the numbers and the ways out."""
    alt = plan.alternatives
    wanted = STRATEGIES.get(kind, ("full",))[0]
    where = "this GPU" if plan.device == "cuda" else "this machine"
    ways = [
        f"{name} needs ~{alt[name]:.0f} GiB"
        for name in ("lora", "qlora")
        if name not in STRATEGIES.get(kind, ()) and name in alt
    ]
    ways.append("more GPUs with training.launcher, or a smaller max_seq_length")
    return (
        f"{_label(wanted)} of {plan.params / 1e9:.1f}B needs ~{alt[wanted]:.0f} GiB "
        f"(the cheapest {plan.strategy}: ~{plan.peak_gib:.1f} GiB); {where} has "
        f"{plan.device_gib:.0f} GiB ({plan.device_source}); ways out: " + "; ".join(ways)
    )


def _label(strategy: str) -> str:
    return {"full": "full fine-tune", "full-8bit": "full fine-tune with 8-bit AdamW"}.get(
        strategy, strategy.upper() if strategy == "qlora" else "LoRA"
    )


def fallback(plan: MemoryPlan, shape: ModelShape, s: Settings) -> MemoryPlan | None:
    """The next cheaper plan after ``plan`` ran out of memory: half the micro-batch (kept a
    divisor of the effective batch), else the next strategy of its kind (QLoRA after LoRA,
    8-bit AdamW after full) at micro-batch 1; None when there is nothing cheaper."""
    settings = replace(s, micro_batch=plan.micro_batch, checkpointing=plan.gradient_checkpointing)
    smaller = [m for m in _micro_batches(plan.micro_batch // 2, s.effective_batch)]
    if plan.micro_batch > 1 and smaller:
        nxt = replace(settings, micro_batch=smaller[0])
        strategy = plan.strategy
    else:
        order = STRATEGIES.get(s.kind, ())
        if plan.strategy not in order or order.index(plan.strategy) + 1 >= len(order):
            return None
        strategy = order[order.index(plan.strategy) + 1]
        nxt = replace(settings, micro_batch=1)
    e = estimate(shape, strategy, nxt)
    new = _plan(
        strategy,
        nxt,
        e,
        shape,
        plan.device_gib,
        plan.device_source,
        plan.alternatives,
        plan.devices,
    )
    previous = {k: v for k, v in plan.to_dict().items() if k != "fallback_from"}
    return replace(new, fallback_from=previous)


def job_devices(
    launcher: str | None = None, visible_gpus: int = 0, nproc: int | None = None
) -> int:
    """How many devices a job trains on: one for a single process (``training.launcher``
    ``local``); with torchrun ``nproc`` (``training.nproc_per_node``), else every visible
    GPU. Memory is planned per device as a whole replica (FSDP's sharding of a full
    fine-tune is not counted: the plan errs on the safe side); the time estimate is
    divided among the devices."""
    if launcher in (None, "", "local", "single"):
        return 1
    return max(1, nproc if nproc is not None else visible_gpus)
