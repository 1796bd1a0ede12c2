"""Label-smoothed cross-entropy computed chunk by chunk of target tokens, fused with the output projection.

fairseq's ``label_smoothed_cross_entropy`` projects every position of the batch to the vocabulary, upcasts the
logits to fp32 and takes a full log-softmax: at a 32k vocabulary and 16k tokens that is 1 GiB of fp16 logits plus
2 GiB per fp32 copy, written and read several times. This criterion asks the model for decoder *features*, drops
padding positions, and computes output projection + log-sum-exp + label-smoothed NLL for ``--loss-chunk-size``
tokens at a time in one autograd Function whose backward recomputes each chunk's logits. Only one chunk of
logits ever exists; the values and gradients are those of fairseq's criterion (same formula, fp32 log-sum-exp),
and the logged metrics are reduced by fairseq's own ``reduce_metrics`` so that training logs are comparable.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from torch import Tensor, nn

CRITERION = "label_smoothed_cross_entropy_chunked"
STOCK = "label_smoothed_cross_entropy"


class ChunkedCriterionError(ValueError):
    """An option or a model that the chunked criterion cannot handle."""


@dataclass
class ChunkedLabelSmoothedCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    loss_chunk_size: int = field(
        default=4096,
        metadata={
            "help": "target tokens whose logits are computed at once (one chunk of fp32 logits is "
            "loss-chunk-size x vocabulary x 4 bytes); any value gives the same loss"
        },
    )
    loss_compile: bool = field(
        default=False,
        metadata={
            "help": "fuse each chunk's element-wise work (log-sum-exp, softmax gradient, casts) with torch.compile; "
            "the first updates compile"
        },
    )


def _label_smoothing_weights(epsilon: float, vocab: int) -> Tuple[float, float]:
    # fairseq's label_smoothed_nll_loss: loss = (1 - eps - eps_i) * nll + eps_i * smooth, eps_i = eps / (V - 1).
    eps_i = epsilon / (vocab - 1)
    return 1.0 - epsilon - eps_i, eps_i


def _chunk_logits(features: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    # In the features' precision (fp16 under --fp16), as nn.Linear would; the caller upcasts to fp32.
    return nn.functional.linear(features, weight.to(features.dtype), None if bias is None else bias.to(features.dtype))


def _chunk_statistics(logits: Tensor, target: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row: fp32 log-sum-exp, target logit and sum of logits; and the number of correct argmax predictions."""
    z = logits.float()
    return (
        torch.logsumexp(z, dim=-1),
        z.gather(1, target.unsqueeze(1)).squeeze(1),
        z.sum(dim=-1),
        z.argmax(dim=-1).eq(target).sum(),
    )


def _chunk_grad_logits(
    logits: Tensor, target: Tensor, lse: Tensor, scale_p: Tensor, scale_target: Tensor, shift: Tensor
) -> Tensor:
    """Gradient w.r.t. the logits, ``scale_p * softmax - scale_target * onehot(target) - shift``, in fp32 then cast."""
    grad = logits.float().sub_(lse.unsqueeze(1)).exp_().mul_(scale_p).sub_(shift)
    grad.scatter_add_(1, target.unsqueeze(1), (-scale_target).expand(target.size(0), 1).contiguous())
    return grad.to(logits.dtype)


def _chunk_grad_logits_fusable(
    logits: Tensor, target: Tensor, lse: Tensor, scale_p: Tensor, scale_target: Tensor, shift: Tensor
) -> Tensor:
    """The same gradient written point-wise (no in-place scatter), so that torch.compile makes it one kernel."""
    columns = torch.arange(logits.size(1), device=logits.device)
    grad = torch.exp(logits.float() - lse.unsqueeze(1)) * scale_p - shift
    grad = torch.where(columns == target.unsqueeze(1), grad - scale_target, grad)
    return grad.to(logits.dtype)


_COMPILED: Dict[str, Callable] = {}


def _kernels(compiled: bool) -> Tuple[Callable, Callable]:
    """The per-chunk element-wise functions: eager, or compiled once per process (dynamic shapes, no recompiles)."""
    if not compiled:
        return _chunk_statistics, _chunk_grad_logits
    if not _COMPILED:
        _COMPILED["statistics"] = torch.compile(_chunk_statistics, dynamic=True)
        _COMPILED["grad_logits"] = torch.compile(_chunk_grad_logits_fusable, dynamic=True)
    return _COMPILED["statistics"], _COMPILED["grad_logits"]


class _ChunkedLabelSmoothedNLL(torch.autograd.Function):
    """Summed label-smoothed NLL of ``linear(features)`` over tokens, one chunk of logits at a time."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, features, weight, bias, target, epsilon: float, chunk_size: int, compiled: bool):
        vocab = weight.size(0)
        a, b = _label_smoothing_weights(epsilon, vocab)
        statistics, _ = _kernels(compiled)
        lse = features.new_empty(features.size(0), dtype=torch.float32)
        nll = features.new_zeros((), dtype=torch.float32)
        smooth = features.new_zeros((), dtype=torch.float32)
        n_correct = torch.zeros((), dtype=torch.long, device=features.device)
        for start in range(0, features.size(0), chunk_size):
            rows = slice(start, start + chunk_size)
            chunk_lse, target_logit, logit_sum, correct = statistics(
                _chunk_logits(features[rows], weight, bias), target[rows]
            )
            lse[rows] = chunk_lse
            nll += (chunk_lse - target_logit).sum()
            # -sum_j log p_j = V * lse - sum_j z_j: the smoothing term without a log-probability tensor.
            smooth += (vocab * chunk_lse - logit_sum).sum()
            n_correct += correct
        ctx.save_for_backward(features, weight, bias, target, lse)
        ctx.epsilon, ctx.chunk_size, ctx.compiled = epsilon, chunk_size, compiled
        ctx.mark_non_differentiable(n_correct)
        return a * nll + b * smooth, nll, n_correct

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_loss, grad_nll, _grad_n_correct):
        features, weight, bias, target, lse = ctx.saved_tensors
        a, b = _label_smoothing_weights(ctx.epsilon, weight.size(0))
        _, grad_logits_of = _kernels(ctx.compiled)
        need_features, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_features = torch.empty_like(features) if need_features else None
        # fp32 accumulators: chunks add up in full precision even when the weights are fp16.
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        grad_loss, grad_nll = grad_loss.float(), grad_nll.float()
        # d loss / d z_j = (a + b V) p_j - a [j = t] - b with a + b V = 1; d nll / d z_j = p_j - [j = t].
        scale_p, scale_target, shift = grad_loss + grad_nll, grad_loss * a + grad_nll, grad_loss * b
        for start in range(0, features.size(0), ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            chunk = features[rows]
            logits = _chunk_logits(chunk, weight, bias)
            grad_logits = grad_logits_of(logits, target[rows], lse[rows], scale_p, scale_target, shift)
            if need_features:
                grad_features[rows] = grad_logits @ weight.to(grad_logits.dtype)
            if need_weight:
                if grad_weight.dtype == chunk.dtype == grad_logits.dtype:
                    grad_weight.addmm_(grad_logits.t(), chunk)
                else:
                    grad_weight.add_(grad_logits.t() @ chunk)
            if need_bias:
                grad_bias.add_(grad_logits.sum(dim=0))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_features, grad_weight, grad_bias, None, None, None, None


def chunked_label_smoothed_nll_loss(
    features: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    epsilon: float,
    chunk_size: int,
    compiled: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss, nll_loss, n_correct) summed over the rows of ``features`` (N x C) against ``target`` (N).

    Equal to fairseq's ``label_smoothed_nll_loss(log_softmax(linear(features, weight, bias).float()), target,
    epsilon)`` summed over tokens, without padding: the caller drops padding positions first. ``compiled`` fuses
    each chunk's element-wise work with torch.compile (same values up to floating-point rounding).
    """
    if chunk_size < 1:
        raise ChunkedCriterionError(f"--loss-chunk-size must be a positive number of tokens, got {chunk_size}")
    return _ChunkedLabelSmoothedNLL.apply(
        features, weight, bias, target, float(epsilon), int(chunk_size), bool(compiled)
    )


def output_projection(model: nn.Module) -> nn.Linear:
    """The decoder's ``output_projection`` Linear, which this criterion applies itself; errors when there is none."""
    decoder = getattr(model, "decoder", None)
    name = type(decoder).__name__
    if getattr(decoder, "adaptive_softmax", None) is not None:
        raise ChunkedCriterionError(
            f"--criterion {CRITERION} needs a plain output projection, but {name} uses an adaptive softmax "
            f"(--adaptive-softmax-cutoff): use --criterion adaptive_loss"
        )
    projection = getattr(decoder, "output_projection", None)
    if not isinstance(projection, nn.Linear):
        raise ChunkedCriterionError(
            f"--criterion {CRITERION} needs a decoder whose output_layer is a plain nn.Linear named "
            f"output_projection, and {name} has none: use --criterion {STOCK}"
        )
    if type(decoder).output_layer not in _plain_output_layers():
        raise ChunkedCriterionError(
            f"--criterion {CRITERION} computes output_projection(features) itself, but {name} overrides "
            f"output_layer and may do more: use --criterion {STOCK}"
        )
    return projection


def _plain_output_layers() -> set:
    """``output_layer`` methods known to be exactly ``output_projection(features)`` (without adaptive softmax)."""
    from fairseq.models.transformer import TransformerDecoderBase

    from ..models.resmlp_decoder import ResMLPDecoder

    return {TransformerDecoderBase.output_layer, ResMLPDecoder.output_layer}


@register_criterion(CRITERION, dataclass=ChunkedLabelSmoothedCrossEntropyConfig)
class ChunkedLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    """fairseq's label-smoothed cross-entropy without whole-batch logits: same options, values and logs."""

    def __init__(
        self,
        task,
        sentence_avg: bool,
        label_smoothing: float,
        ignore_prefix_size: int = 0,
        report_accuracy: bool = False,
        loss_chunk_size: int = 4096,
        loss_compile: bool = False,
    ) -> None:
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if not 0.0 <= label_smoothing < 1.0:
            raise ChunkedCriterionError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        if ignore_prefix_size < 0:
            raise ChunkedCriterionError(f"--ignore-prefix-size must be >= 0, got {ignore_prefix_size}")
        if loss_chunk_size < 1:
            raise ChunkedCriterionError(f"--loss-chunk-size must be a positive number of tokens, got {loss_chunk_size}")
        self.loss_chunk_size = loss_chunk_size
        self.loss_compile = loss_compile

    def forward(self, model: nn.Module, sample: Dict, reduce: bool = True) -> Tuple[Tensor, int, Dict]:
        """Loss, sample size and logging outputs, as fairseq's ``label_smoothed_cross_entropy`` returns them."""
        if not reduce:
            raise ChunkedCriterionError(f"--criterion {CRITERION} only computes summed losses: use --criterion {STOCK}")
        projection = output_projection(model)
        features, extra = model(**sample["net_input"], features_only=True)
        target = model.get_targets(sample, (features, extra))
        if self.ignore_prefix_size > 0:
            features = features[:, self.ignore_prefix_size :]
            target = target[:, self.ignore_prefix_size :]
        target = target.reshape(-1)
        # Padding rows are dropped before the projection (one host synchronisation for their count) so that no
        # logits are computed for them; their feature gradients are zeros, as in fairseq's masked loss.
        keep = target.ne(self.padding_idx).nonzero().squeeze(1)
        features = features.reshape(-1, features.size(-1)).index_select(0, keep)
        loss, nll_loss, n_correct = chunked_label_smoothed_nll_loss(
            features,
            projection.weight,
            projection.bias,
            target.index_select(0, keep),
            self.eps,
            self.loss_chunk_size,
            self.loss_compile,
        )
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = utils.item(n_correct)
            logging_output["total"] = keep.numel()
        return loss, sample_size, logging_output
