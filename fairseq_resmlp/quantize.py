"""int8 dynamic quantization of a ResMLP model, for translation on the CPU.

Every ``nn.Linear`` (channel MLPs, cross-attention projections, output projection) gets int8 weights, and its
input is quantized on the fly at each call (PyTorch's dynamic quantization, fbgemm/x86 kernels). Token mixing,
Affine, LayerScale and the embeddings stay float32: they are a small share of a step's arithmetic.

Three ways to use it:

- ``fairseq_resmlp.quantize_int8(model)`` on a loaded model (``hub.models[0]`` of ``ResMLPModel.from_pretrained``);
- ``ResMLPModel.from_pretrained(..., int8=True)``;
- ``fairseq-interactive/-generate ... --cpu --model-overrides "{'int8': True}"`` (the ``int8`` model option,
  applied when the checkpoint's weights are loaded).

Quantized models are for inference on the CPU only: moving one to CUDA, to half precision or training it is
refused with an error at the first forward.
"""

import warnings

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` has int8 dynamically quantized linear layers."""
    return any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())


def _refuse_unsupported(module: nn.Module, args) -> None:
    """Forward pre-hook on the embeddings: the one place every encoder and decoder call passes through."""
    tokens: Tensor = args[0]
    if tokens.device.type != "cpu" or module.weight.device.type != "cpu":
        raise RuntimeError(
            "this ResMLP model is quantized to int8, which runs on the CPU only: translate with --cpu "
            "(or leave out --model-overrides \"{'int8': True}\" / int8=True to use the GPU)"
        )
    if module.weight.dtype != torch.float32:
        raise RuntimeError("this ResMLP model is quantized to int8: do not also convert it to half precision (--fp16)")
    if module.training and torch.is_grad_enabled():
        raise RuntimeError("int8 quantization is for inference: train without the int8 option")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Quantize ``model``'s linear layers to int8 in place (CPU inference only) and return it."""
    for name, param in model.named_parameters():
        if param.device.type != "cpu":
            raise ValueError(f"int8 quantization runs on the CPU only, but {name} is on {param.device}")
        if param.dtype != torch.float32:
            raise ValueError(f"int8 quantization needs a float32 model, but {name} is {param.dtype}")
    if is_int8(model):
        return model
    with warnings.catch_warnings():
        # torch.ao's eager-mode quantization announces its move to torchao; the API still works as documented.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    embeddings = {id(m): m for m in model.modules() if isinstance(m, nn.Embedding)}
    for embedding in embeddings.values():
        embedding.register_forward_pre_hook(_refuse_unsupported)
    return model
