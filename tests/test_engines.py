"""The engines beyond one machine's DDP: the accelerate configs name valid options, FSDP's sharded
state (torch FSDP 2 on two CPU processes over gloo) matches one process and resumes, a sharded
checkpoint is checked before anything in it is unpickled, and a launch whose engine accelerate
does not start is refused."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from accelerate.utils import DistributedType
from launch_helpers import free_port

from vidgen.errors import VidgenError
from vidgen.training.checkpoints import UnsafeCheckpoint, check_checkpoint_files
from vidgen.training.engines import check_engine

REPO = Path(__file__).resolve().parents[1]


CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_configs_are_read_by_accelerate_launch_and_name_valid_options(config, tiny_unet, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    ClusterConfig.from_yaml_file(config)  # refuses a key accelerate does not know
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(config), "x.py"]))
    settings = yaml.safe_load(config.read_text())
    engine = settings.get("fsdp_config") or settings.get("deepspeed_config") or {}
    options = [f"--{key}={value}" for key, value in engine.items()]
    launch_command_parser().parse_args([*options, "x.py"])  # each a launch option, each value among its choices
    if settings["distributed_type"] == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.launch import prepare_multi_gpu_env

        for key, value in prepare_multi_gpu_env(args).items():
            monkeypatch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()  # what the processes build from the launch's environment
        assert (plugin.fsdp_version, plugin.reshard_after_forward, plugin.activation_checkpointing) == (2, True, True)
        assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
        # the units it wraps are layers of vidgen's U-Nets (the inflated U-Net is diffusers' 2D one plus hooks)
        assert set(plugin.transformer_cls_names_to_wrap) <= {type(m).__name__ for m in tiny_unet.modules()}
    if settings["distributed_type"] == "DEEPSPEED":
        assert args.use_deepspeed and engine["zero_stage"] in (2, 3)


def test_fsdp_on_two_gloo_processes_matches_one_process_and_resumes_from_its_sharded_checkpoint(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO / "tests" / "fsdp_gloo_worker.py"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and result["local_rows"] == 8  # each process holds half of the 16-row weight
    # 2 processes x 2 rows each against 1 process x 4 rows, same seed: the same losses and weights
    assert all(abs(one - two) < 1e-5 for one, two in result["losses"])
    assert result["weights_gap"] < 1e-6 and result["ema_gap"] < 1e-6
    # the checkpoint's shards passed vidgen's check and, loaded into other weights, continue bit for bit
    assert result["files"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert result["resume_gap"] == 0.0 and result["resume_ema_gap"] == 0.0


class Planted:
    """An object a pickle would rebuild by running code (torch.load(weights_only=True) refuses it)."""

    def __reduce__(self):
        return (os.system, ("touch planted",))


def sharded_checkpoint(folder: Path, extra=None) -> Path:
    """A checkpoint holding a sharded model state as accelerate writes it under FSDP (one process)."""
    import torch.distributed.checkpoint as dcp

    state = {"w": torch.arange(6.0).reshape(2, 3), "lr": 0.5, **(extra or {})}
    dcp.save({"model": state}, checkpoint_id=folder / "pytorch_model_fsdp_0")
    (folder / "trainer.json").write_text(json.dumps({"step": 1}))
    return folder


def test_sharded_checkpoint_is_checked_before_anything_in_it_is_unpickled(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    monkeypatch.chdir(tmp_path)
    good = sharded_checkpoint(tmp_path / "good")
    check_checkpoint_files(good, ema_expected=False)
    loaded = {"model": {"w": torch.zeros(2, 3), "lr": 0.0}}
    dcp.load(loaded, checkpoint_id=good / "pytorch_model_fsdp_0")
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3)) and loaded["model"]["lr"] == 0.5

    layout = sharded_checkpoint(tmp_path / "layout")  # a .metadata that would run a command
    (layout / "pytorch_model_fsdp_0" / ".metadata").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(UnsafeCheckpoint, match=r"\.metadata is not a sharded state's layout.*global posix\.system"):
        check_checkpoint_files(layout, ema_expected=False)

    value = sharded_checkpoint(tmp_path / "value", {"callback": Planted()})  # a non-tensor value that runs code
    with pytest.raises(UnsafeCheckpoint, match=r"holds a value \(model\.callback\) that is not plain data"):
        check_checkpoint_files(value, ema_expected=False)
    assert not (tmp_path / "planted").exists()  # refused, never run

    (good / "pytorch_model_fsdp_0" / "notes.pkl").write_bytes(b"")
    with pytest.raises(UnsafeCheckpoint, match="notes.pkl is not a file of a sharded"):
        check_checkpoint_files(good, ema_expected=False)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(UnsafeCheckpoint, match="stuff is not a folder vidgen or accelerate writes"):
        check_checkpoint_files(tmp_path / "other", ema_expected=False)


def test_an_engine_accelerate_did_not_start_is_refused_and_zero3_refuses_an_ema(monkeypatch):
    on_cpu = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, state=SimpleNamespace())
    check_engine(on_cpu, ema_decay=0.999)  # plain DDP, as launched
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(VidgenError, match="asked for FSDP but accelerate runs MULTI_CPU"):
        check_engine(on_cpu, ema_decay=0.999)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    zero3 = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                            state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3)))
    check_engine(zero3, ema_decay=0)
    with pytest.raises(VidgenError, match="train.ema_decay=0"):
        check_engine(zero3, ema_decay=0.999)


def test_deepspeed_checkpoint_files_must_load_as_plain_tensors(tmp_path):
    folder = tmp_path / "step-00000001" / "pytorch_model"  # as DeepSpeed's save_checkpoint lays it out
    folder.mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(3)}, "global_steps": 1}, folder / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text("pytorch_model")
    check_checkpoint_files(folder.parent, ema_expected=False)
    torch.save({"loss_scaler": Planted()}, folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"optim_states\.pt holds a pickle that is not plain tensors"):
        check_checkpoint_files(folder.parent, ema_expected=False)
