"""Checking the sharded state that FSDP and DeepSpeed runs write into a checkpoint, before anything
in it is unpickled.

accelerate's `save_state` under FSDP with `SHARDED_STATE_DICT` writes one torch.distributed.checkpoint
(DCP) folder per model and per optimizer:

    step-N/pytorch_model_fsdp_0/   .metadata          the layout: a pickle of DCP's dataclasses
                                   __0_0.distcp, ...  one file per rank: tensors (read by DCP with
                                                      torch.load(weights_only=True)) and non-tensor
                                                      values such as an optimizer group's lr
    step-N/optimizer_0/            the same for the optimizer

DCP reads `.metadata` with plain `pickle.load` and the non-tensor values with
`torch.load(weights_only=False)`: either could run code. So before `load_state` vidgen reads
`.metadata` with an unpickler that builds only DCP's own layout classes, tensor sizes, dtypes and
paths, and reads every non-tensor value with `torch.load(weights_only=True)` (plain numbers,
strings and containers). A folder holding anything else is refused.

DeepSpeed's `save_checkpoint` writes `pytorch_model/` (`*_model_states.pt`, `*_optim_states.pt`,
a `latest` tag); DeepSpeed reads them with full unpickling, so each `.pt` must load with
`weights_only=True` first (not run here: DeepSpeed needs CUDA, see docs/cluster.md).
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Callable

import torch

DCP_FOLDER = re.compile(r"^(pytorch_model_fsdp|optimizer)_\d+$")  # accelerate's names (model/optimizer index)
DCP_FILE = re.compile(r"^(\.metadata|__\d+_\d+\.distcp)$")
DEEPSPEED_FOLDER = "pytorch_model"
DEEPSPEED_FILE = re.compile(r"^(latest|[\w.-]+\.pt)$")

_LAYOUT_CLASSES = {  # what a DCP .metadata pickle is made of (torch 2.13)
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "TensorProperties",
                                              "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
}


class _LayoutUnpickler(pickle.Unpickler):
    """Builds DCP's layout dataclasses, torch.Size and dtypes; refuses every other global."""

    def find_class(self, module: str, name: str):
        if name in _LAYOUT_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in a checkpoint layout")


def read_layout(path: Path):
    """A DCP `.metadata` file, unpickled with `_LayoutUnpickler`."""
    with open(path, "rb") as f:
        return _LayoutUnpickler(f).load()


def check_dcp_folder(folder: Path, refuse: Callable[[Path, str], Exception]) -> None:
    """Refuse a DCP folder holding a file DCP does not write, a layout that is more than DCP's own
    classes, or a non-tensor value that is more than plain data."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    for path in sorted(folder.iterdir()):
        if not (path.is_file() and DCP_FILE.match(path.name)):
            raise refuse(path, "is not a file of a sharded (torch.distributed.checkpoint) state")
    layout_path = folder / ".metadata"
    if not layout_path.is_file():
        raise refuse(folder, "is a sharded state without its .metadata")
    try:
        layout = read_layout(layout_path)
        storage = layout.storage_data
        plain_values = [fqn for fqn, meta in layout.state_dict_metadata.items() if isinstance(meta, BytesStorageMetadata)]
    except Exception as exc:  # a crafted layout can raise anything on the way (KeyError, IndexError, ...)
        raise refuse(layout_path, f"is not a sharded state's layout ({type(exc).__name__}: {str(exc)[:160]})") from None
    for index, where in storage.items():
        if index.fqn not in plain_values:
            continue
        if where.transform_descriptors or not DCP_FILE.match(str(where.relative_path)):
            raise refuse(layout_path, f"stores {index.fqn} in a way vidgen does not read")
        with open(folder / where.relative_path, "rb") as f:
            f.seek(where.offset)
            value = f.read(where.length)
        try:
            torch.load(io.BytesIO(value), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise refuse(folder / where.relative_path, f"holds a value ({index.fqn}) that is not plain data "
                         f"({str(exc).strip().splitlines()[0][:160]})") from None


def check_deepspeed_folder(folder: Path, load_plain: Callable[[Path], object],
                           refuse: Callable[[Path, str], Exception]) -> None:
    """Every `.pt` of a DeepSpeed checkpoint folder must be plain tensors and numbers."""
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if not DEEPSPEED_FILE.match(path.name):
            raise refuse(path, "is not a file of a DeepSpeed checkpoint")
        if path.suffix == ".pt":
            load_plain(path)  # memory-mapped: the tensors are not read, only the pickle's structure


def check_state_folders(folder: Path, load_plain: Callable[[Path], object],
                        refuse: Callable[[Path, str], Exception]) -> None:
    """The sub-folders of a checkpoint: sharded model/optimizer states only, each checked."""
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        if DCP_FOLDER.match(path.name):
            check_dcp_folder(path, refuse)
        elif path.name == DEEPSPEED_FOLDER:
            check_deepspeed_folder(path, load_plain, refuse)
        else:
            raise refuse(path, "is not a folder vidgen or accelerate writes into a checkpoint")
