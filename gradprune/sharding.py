"""FSDP calibration: every rank holds 1/N of each decoder layer's weights and calibrates its micro-batches.

``trainer.strategy: fsdp`` runs FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's
``ModelParallelStrategy`` on a 1-D mesh of all ranks (data parallel, no tensor parallelism):

* ``shard`` (called from the calibration module's ``configure_model``) applies ``fully_shard`` to every
  decoder layer, then to the root (embeddings, final norm, head; tied weights stay tied);
* FSDP all-gathers a layer's weights for its forward and again for its backward, and swaps the
  *unsharded* parameters into the modules meanwhile (the same parameter objects every step). One
  gradient hook sits on those (``register_unsharded_hooks``): it sees this rank's whole, local gradient
  of each weight, exactly what one process sees for the same micro-batch;
* ``sum_gradients`` makes FSDP's reduce-scatter a plain sum, and a hook on each sharded weight
  (``register_sharded_hooks``) receives this rank's rows of that sum (a DTensor gradient), which feed the
  mean gradient's row-sharded sums; ``reduce_scatter_rows`` does the same for another whole tensor (the
  squared gradients, for F) with the rows split as FSDP splits them;
* accumulators are small or row-sharded: summed once at the end, their ``rows`` gathered in rank order
  (``all_gather_rows``);
* after calibration ``gather_full_model`` collects the full weights on rank 0's host (the public
  ``torch.distributed.checkpoint`` full state dict) into a plain model on rank 0's device, for scoring,
  planning, surgery, evaluation and saving; the other ranks stop there.

A model built on the meta device reads only this rank's shards from the checkpoint once sharded
(``gradprune/models/shard_loading.py``); see docs/performance.md.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def decoder_layers(model: nn.Module, layers: list) -> list[nn.Module]:
    """The decoder-layer modules holding each prunable layer's attention and MLP (what gets sharded)."""
    parents: dict[int, nn.Module] = {}
    for module in model.modules():
        for child in module.children():
            parents[id(child)] = module
    found = []
    for lm in layers:
        layer = parents.get(id(lm.attn))
        if layer is None or parents.get(id(lm.mlp)) is not layer:
            raise ValueError(f"layer {lm.index}: attention and MLP do not share one decoder-layer module")
        found.append(layer)
    return found


def shard(model: nn.Module, layers: list, mesh) -> None:
    """``fully_shard`` every decoder layer, then untied input and output embeddings (each its own unit: the
    vocabulary-sized matrices are all-gathered only while they run, not for the whole step), then the root
    (the final norm, and tied embeddings, which must stay in one unit), over ``mesh`` (in place)."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model, layers):
        fully_shard(layer, mesh=mesh)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and embed is not None and head.weight is not embed.weight:
        fully_shard(embed, mesh=mesh)
        fully_shard(head, mesh=mesh)
    fully_shard(model, mesh=mesh)


def register_unsharded_hooks(stack: contextlib.ExitStack, layers: list, on_grad) -> None:
    """Route the gradient of every prunable weight to ``on_grad(layer, role, param)``.

    FSDP swaps each module's unsharded parameter in before its forward: a forward pre-hook registers the
    post-accumulate gradient hook on it the first time it is seen (the same object on every later step).
    """
    seen: set[int] = set()

    def pre_hook(lm, module, roles):
        def hook(_module, _args):
            for role, attr in roles:
                p = getattr(module, attr)
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                stack.enter_context(p.register_post_accumulate_grad_hook(
                    lambda param, lm_=lm, r_=role: on_grad(lm_, r_, param)))
        return hook

    for lm in layers:
        by_module: dict[int, tuple[nn.Module, list[tuple[str, str]]]] = {}
        for role, (module, attr) in lm.sources().items():
            by_module.setdefault(id(module), (module, []))[1].append((role, attr))
        for module, roles in by_module.values():
            stack.enter_context(module.register_forward_pre_hook(pre_hook(lm, module, roles)))


def register_sharded_hooks(stack: contextlib.ExitStack, layers: list, on_shard) -> None:
    """Route the reduce-scattered gradient rows of every prunable (sharded) weight to
    ``on_shard(layer, role, param)``: FSDP calls a sharded parameter's post-accumulate hooks itself, once it
    has assigned the rows it received."""
    for lm in layers:
        for role, p in lm.weights().items():
            stack.enter_context(p.register_post_accumulate_grad_hook(
                lambda param, lm_=lm, r_=role: on_shard(lm_, r_, param)))


def sum_gradients(model: nn.Module) -> None:
    """Every FSDP unit of ``model`` reduce-scatters gradients as a plain SUM (divide factor 1, sum-only
    collectives: the hooks weigh each rank's contribution themselves)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            if hasattr(module, "set_force_sum_reduction_for_comms"):
                module.set_force_sum_reduction_for_comms(True)


def row_split(rows: int, world: int, rank: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` rank ``rank`` holds of ``rows`` split over ``world`` ranks as FSDP2 does
    (``torch.chunk`` on dim 0: ceil(rows / world) each, the last ranks' shorter or empty)."""
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


def reduce_scatter_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, this rank's rows of it (split as FSDP splits a parameter)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    rows = tensor.shape[0]
    chunk = -(-rows // world)
    if rows == chunk * world:
        full = tensor.contiguous()
    else:
        full = tensor.new_zeros((chunk * world, *tensor.shape[1:]))
        full[:rows] = tensor
    out = tensor.new_empty((chunk, *tensor.shape[1:]))
    dist.reduce_scatter_tensor(out, full, op=dist.ReduceOp.SUM)
    start, stop = row_split(rows, world, rank)
    return out[:stop - start]


def all_gather_rows(local: torch.Tensor, rows_per_rank: list[int]) -> torch.Tensor:
    """Every rank's ``local`` rows (``rows_per_rank[r]`` of them on rank r) concatenated in rank order."""
    import torch.distributed as dist

    longest = max(rows_per_rank)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in rows_per_rank]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, rows_per_rank, strict=True)])


def gather_full_model(model: nn.Module, device: torch.device | str | None = None) -> nn.Module | None:
    """The full weights of a sharded ``model`` as a plain model on rank 0 (None on the other ranks).

    Every rank takes part (the gather is a collective). Rank 0 receives one full tensor at a time into
    host memory, builds the model's own class from its config on the meta device and assigns the
    weights, copies the buffers (RoPE frequencies are not in the state dict), and moves it to ``device``
    (default: the rank's own; ``"cpu"`` keeps it on the host, e.g. to spread it over several GPUs).
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    device = device if device is not None else _local_device(model)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        del state
        return None
    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    return assemble(cls, model.config, state, buffers, model.generation_config, "FSDP gather").to(device).eval()


def assemble(cls: type, config, state: dict, buffers: dict, generation_config=None,
             what: str = "assembly") -> nn.Module:
    """A plain model of class ``cls`` built on the meta device from ``config``, whose parameters *are* the
    tensors of ``state`` (assigned, not copied) and whose buffers are ``buffers`` (RoPE frequencies are
    not in a state dict); tied embeddings are tied again. A parameter missing from ``state`` is an error."""
    with torch.device("meta"):
        plain = cls(config)
    plain.load_state_dict(state, strict=False, assign=True)
    for name, buf in buffers.items():
        owner_module, _, attr = name.rpartition(".")
        target = plain.get_submodule(owner_module) if owner_module else plain
        persistent = attr not in getattr(target, "_non_persistent_buffers_set", set())
        target.register_buffer(attr, buf, persistent=persistent)
    if getattr(plain.config, "tie_word_embeddings", False):
        plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"{what}: parameters missing from the state dict: {missing[:5]}")
    if generation_config is not None:
        plain.generation_config = generation_config
    return plain


def _local_device(model: nn.Module) -> torch.device:
    p = next(model.parameters())
    return p.to_local().device if hasattr(p, "to_local") else p.device
