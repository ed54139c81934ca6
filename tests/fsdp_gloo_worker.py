"""One rank of tests/test_engines.py's FSDP run: torch's FSDP 2 (`fully_shard`) on CPU processes over
gloo, with vidgen's sharded-state pieces (the EMA kept per shard and gathered whole, the sharded
checkpoint's check, re-sharding). accelerate 1.16 does not route FSDP to CPU processes (it runs
them as DDP), so this drives torch directly; the loop under accelerate's FSDP needs GPUs.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_gloo_worker.py OUT_DIR

Rank r trains on rows [2r, 2r + 2) of a batch of 4; a whole copy of the model, on every rank,
trains on all 4 rows (one process with the batch twice as large). Rank 0 writes OUT_DIR/result.json.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from diffusers.training_utils import EMAModel
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from vidgen.training.checkpoints import _load_plain, _refuse
from vidgen.training.engines import shard_like, whole
from vidgen.training.sharded import check_state_folders


def build(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def shard(model: torch.nn.Module, mesh) -> torch.nn.Module:
    fully_shard(model[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def step(model, optimizer, x, y) -> float:
    loss = torch.nn.functional.mse_loss(model(x), y)  # mean over the rows: FSDP averages the ranks' gradients
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    data = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 8, generator=data), torch.randn(4, 4, generator=data)) for _ in range(4)]
    mine = slice(2 * rank, 2 * rank + 2)

    reference = build(0)
    sharded = shard(copy.deepcopy(reference), mesh)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    opt = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    ref_ema, ema = EMAModel(reference.parameters(), decay=0.9), EMAModel(list(sharded.parameters()), decay=0.9)
    losses = []
    for x, y in batches[:3]:
        ref_loss = step(reference, ref_opt, x, y)
        loss = torch.tensor(step(sharded, opt, x[mine], y[mine]))
        dist.all_reduce(loss)
        losses.append((ref_loss, loss.item() / world))
        ref_ema.step(reference.parameters())
        ema.step(list(sharded.parameters()))

    def gap(a, b) -> float:
        return max((x - y).abs().max().item() for x, y in zip(a, b))

    weights_gap = gap([whole(p) for p in sharded.parameters()], reference.parameters())
    ema_gap = gap([whole(s) for s in ema.shadow_params], ref_ema.shadow_params)

    # the sharded checkpoint, laid out as accelerate's save_state writes it under FSDP
    folder = out / "step-00000003"
    dcp.save({"model": get_model_state_dict(sharded)}, checkpoint_id=folder / "pytorch_model_fsdp_0")
    dcp.save({"optimizer": get_optimizer_state_dict(sharded, opt)}, checkpoint_id=folder / "optimizer_0")
    saved_ema = [whole(s) for s in ema.shadow_params]  # what vidgen's ema.safetensors holds
    dist.barrier()
    check_state_folders(folder, _load_plain, _refuse)  # before anything in it is read

    resumed = shard(build(99), mesh)  # other weights, replaced by the checkpoint's
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    model_state = {"model": get_model_state_dict(resumed)}
    dcp.load(model_state, checkpoint_id=folder / "pytorch_model_fsdp_0")
    set_model_state_dict(resumed, model_state["model"])
    optim_state = {"optimizer": get_optimizer_state_dict(resumed, resumed_opt)}
    dcp.load(optim_state, checkpoint_id=folder / "optimizer_0")
    set_optimizer_state_dict(resumed, resumed_opt, optim_state["optimizer"])
    resumed_ema = EMAModel(list(resumed.parameters()), decay=0.9)
    resumed_ema.load_state_dict({**ema.state_dict(), "shadow_params": [shard_like(s, p) for s, p in
                                                                        zip(saved_ema, resumed.parameters())]})
    x, y = batches[3]
    step(sharded, opt, x[mine], y[mine])
    step(resumed, resumed_opt, x[mine], y[mine])
    ema.step(list(sharded.parameters()))
    resumed_ema.step(list(resumed.parameters()))
    resume_gap = gap([whole(p) for p in resumed.parameters()], [whole(p) for p in sharded.parameters()])
    resume_ema_gap = gap([whole(s) for s in resumed_ema.shadow_params], [whole(s) for s in ema.shadow_params])
    local_rows = sharded[0].weight.to_local().shape[0]
    if rank == 0:
        files = sorted(p.name for p in (folder / "pytorch_model_fsdp_0").iterdir())
        (out / "result.json").write_text(json.dumps({
            "world": world, "local_rows": local_rows, "losses": losses, "weights_gap": weights_gap,
            "ema_gap": ema_gap, "resume_gap": resume_gap, "resume_ema_gap": resume_ema_gap, "files": files}))
    dist.barrier()  # both ranks done before gloo is torn down (a rank leaving early aborted the other's teardown)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
