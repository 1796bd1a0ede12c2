"""``--optimizer fused_adam``: fairseq's Adam (AdamW-style weight decay) as a handful of multi-tensor kernels.

Why: fairseq-train of a small model is bound by the host, not the GPU (docs/training_speed.md). Under ``--fp16``
fairseq's FP16Optimizer copies every parameter's gradient into one flat fp32 buffer and every updated weight back,
one Python-dispatched copy per parameter, and fairseq's own Adam runs a dozen separate element-wise passes. This
optimizer keeps the fp32 master weights itself and does, per update and per parameter group:

- the gradients' norm: one ``_foreach_norm`` (instead of one norm per parameter);
- unscaling / clipping: one ``_foreach_mul_``;
- fp16 gradients into fp32 buffers: one ``_foreach_copy_``;
- the AdamW update on the fp32 masters: torch's fused (or, where unsupported, foreach) AdamW;
- the updated masters back into the fp16 weights: one ``_foreach_copy_``.

Use it with ``--fp16 --memory-efficient-fp16`` (or ``--bf16 --memory-efficient-bf16``): fairseq then hands it the
half-precision parameters directly and skips FP16Optimizer. Despite the flag's name nothing is lost: the fp32 master
weights and moments live in this optimizer's state, exactly the precision FP16Optimizer keeps, and they are saved
in checkpoints so that a resumed run continues from the same fp32 weights. With plain ``--fp16`` it works too (it then
updates FP16Optimizer's flat fp32 buffer, and the per-parameter copies stay), and in fp32.

The update is ``torch.optim.AdamW``'s: ``p -= lr * (wd * p + m_hat / (sqrt(v_hat) + eps))``. fairseq's Adam adds eps
before the bias correction of v (an effective ``eps / sqrt(1 - beta2^t)``); with eps = 1e-8 the difference is far below
fp16 resolution, and the tests bound it.
"""

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf
from torch import Tensor
from torch.optim.adamw import adamw as functional_adamw

logger = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)


@dataclass
class FusedAdamConfig(FairseqDataclass):
    adam_betas: Any = field(default=(0.9, 0.999), metadata={"help": "betas for Adam optimizer"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adam optimizer"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (decoupled, as fairseq's adam)"})
    lr: List[float] = II("optimization.lr")


def _betas(value: Any) -> Tuple[float, float]:
    """``--adam-betas`` arrives as the string '(0.9, 0.98)' from the command line, a list from a config."""
    if isinstance(value, str):
        try:
            parsed = tuple(float(x) for x in value.strip("()[] ").split(","))
        except ValueError:
            parsed = ()
    else:
        try:
            parsed = tuple(float(x) for x in (OmegaConf.to_container(value) if OmegaConf.is_config(value) else value))
        except (TypeError, ValueError):
            parsed = ()
    if len(parsed) != 2 or not all(0.0 <= b < 1.0 for b in parsed):
        raise ValueError(f"--adam-betas: expected two numbers in [0, 1) such as '(0.9, 0.98)', got {value!r}")
    return parsed  # type: ignore[return-value]


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW over fp32 master copies of half-precision parameters (fp32 parameters are their own masters).

    The state of each parameter: ``step`` (a float32 tensor, as torch's fused kernel wants), ``exp_avg``,
    ``exp_avg_sq`` and, for an fp16/bf16 parameter, ``master`` (fp32). ``step(scale=s)`` divides the gradients by
    ``s`` first: fairseq's fp16 wrappers pass the loss scale (and the clipping and normalisation factors) that way.
    """

    # Read by fairseq's wrappers (FairseqOptimizer.supports_*).
    supports_memory_efficient_fp16 = True
    supports_step_with_scale = True
    supports_flat_params = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"fused_adam: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _state_of(self, p: Tensor) -> Dict[str, Tensor]:
        state = self.state[p]
        if not state:
            master = p.detach().float().clone() if p.dtype in _HALF else p
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(master, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(master, memory_format=torch.preserve_format)
            if p.dtype in _HALF:
                state["master"] = master
        return state

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None, scale: Union[float, Tensor] = 1.0):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Grouped by (device, parameter dtype): each group is one multi-tensor launch per operation.
            buckets: Dict[Tuple[torch.device, torch.dtype], List[Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("fused_adam does not support sparse gradients")
                buckets.setdefault((p.device, p.dtype), []).append(p)
            for (device, dtype), params in buckets.items():
                self._update(group, device, dtype, params, scale)
        return loss

    def _update(self, group, device, dtype, params: List[Tensor], scale: Union[float, Tensor]) -> None:
        states = [self._state_of(p) for p in params]
        half = dtype in _HALF
        masters = [s["master"] for s in states] if half else params
        grads = [p.grad for p in params]
        if half:
            # fp32 gradient buffers, reused across updates (the update runs in fp32 whatever the model's dtype).
            buffers = [s.get("grad32") for s in states]
            if any(b is None for b in buffers):
                for s, m in zip(states, masters):
                    s["grad32"] = torch.empty_like(m)
                buffers = [s["grad32"] for s in states]
            torch._foreach_copy_(buffers, grads)
            grads = buffers
        if torch.is_tensor(scale) or scale != 1.0:
            torch._foreach_mul_(grads, (1.0 / scale).to(device) if torch.is_tensor(scale) else 1.0 / scale)
        beta1, beta2 = group["betas"]
        functional_adamw(
            masters,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            foreach=None if device.type == "cuda" else True,
            fused=True if device.type == "cuda" else None,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
        if half:
            torch._foreach_copy_(params, masters)

    def state_dict(self) -> Dict[str, Any]:
        # The fp32 gradient buffers are scratch space: not saved.
        sd = super().state_dict()
        sd["state"] = {k: {n: v for n, v in s.items() if n != "grad32"} for k, s in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        # torch casts every floating-point state tensor to its parameter's dtype: that would round the fp32 masters and
        # moments of half-precision parameters to fp16. Restore the saved tensors (on the parameter's device) instead.
        saved = {k: dict(v) for k, v in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for index, p in zip(saved_ids, params):
            if index in saved:
                self.state[p] = {n: v.to(p.device) for n, v in saved[index].items()}


@register_optimizer("fused_adam", dataclass=FusedAdamConfig)
class FairseqFusedAdam(FairseqOptimizer):
    """fairseq's ``adam`` options, torch's fused AdamW kernel, fp32 master weights kept for half-precision models."""

    def __init__(self, cfg: FusedAdamConfig, params):
        super().__init__(cfg)
        params = list(params)
        self._optimizer = MasterWeightAdamW(params, **self.optimizer_config)
        # (fairseq passes tensors; parameter-group dicts never come from FP16Optimizer and get no hint.)
        flat = (
            len(params) == 1
            and torch.is_tensor(params[0])
            and params[0].dtype == torch.float32
            and params[0].dim() == 1
        )
        if flat and getattr(params[0], "grad", None) is not None:
            # FP16Optimizer's flat fp32 buffer: correct, but its per-parameter copies are what this optimizer avoids.
            logger.info(
                "fused_adam: running inside fairseq's FP16Optimizer (one flat fp32 parameter); add "
                "--memory-efficient-fp16 (or --memory-efficient-bf16) to skip its per-parameter copies"
            )

    @property
    def optimizer_config(self) -> Dict[str, Any]:
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr
        return {
            "lr": float(lr),
            "betas": _betas(self.cfg.adam_betas),
            "eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
        }

    def multiply_grads(self, c) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, c.to(grads[0].device) if torch.is_tensor(c) else c)

    def clip_grad_norm(self, max_norm: float, aggregate_norm_fn=None) -> Tensor:
        """The gradients' total L2 norm in fp32 (fairseq's definition), clipped to ``max_norm`` when it is > 0."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.tensor(0.0)
        # fp32 norms of fp16 gradients (fairseq's definition): a loss-scaled fp16 norm could overflow by itself.
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)))
        if aggregate_norm_fn is not None:
            total = aggregate_norm_fn(total)
        if max_norm > 0:
            coef = (float(max_norm) / (total + 1e-6)).clamp_(max=1)
            torch._foreach_mul_(grads, coef.to(grads[0].dtype))
        return total
