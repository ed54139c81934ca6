"""`vidgen export`: a vidgen model folder back out in another project's layout.

`--format diffusers` writes a folder that diffusers' own pipeline loads, for models whose base
stage is a diffusers video U-Net (zeroscope / ModelScope, AnimateDiff); see docs/interop.md for
what diffusers cannot hold and why.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import VidgenError
from ..fs import check_writable_folder

FORMATS = ("diffusers",)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="Write a model as a diffusers pipeline folder",
        description="Write a vidgen model folder whose base stage is a diffusers video U-Net (a zeroscope / "
        "ModelScope or AnimateDiff model, trained by vidgen or not) as a folder diffusers' TextToVideoSDPipeline or "
        "AnimateDiffPipeline loads with from_pretrained. Interpolation and super-resolution stages are not part of "
        "those pipelines and are left out.")
    parser.add_argument("model", metavar="DIR", help="vidgen model folder (or a diffusers video folder)")
    parser.add_argument("out", metavar="OUT", help="folder to write")
    parser.add_argument("--format", default="diffusers", choices=FORMATS, help="layout to write (default diffusers)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if an earlier `vidgen export` wrote it")
    parser.set_defaults(run=run)
    return parser


def check_export_destination(out: Path, overwrite: bool) -> None:
    from ..interop.export import MARKER

    if out.exists():
        if not (out / MARKER).is_file():
            raise VidgenError(f"{out} exists and was not written by `vidgen export`: choose another OUT")
        if not overwrite:
            raise VidgenError(f"{out} exists: choose another OUT, or add --overwrite to replace it")
    check_writable_folder(out.parent, "OUT's folder")


def run(args: argparse.Namespace) -> int:
    from ..interop.export import check_exportable

    model_dir, out = Path(args.model), Path(args.out)
    if not model_dir.is_dir():
        raise VidgenError(f"{model_dir} is not a folder: give a vidgen model folder")
    if out.resolve() == model_dir.resolve():
        raise VidgenError(f"OUT {out} is the model folder itself: choose another OUT")
    check_export_destination(out, args.overwrite)
    pipeline, left_out = check_exportable(model_dir)

    from transformers.utils import logging as transformers_logging

    from ..interop.export import export_diffusers
    from ..model_folder import VideoModel

    transformers_logging.disable_progress_bar()
    export_diffusers(VideoModel.from_pretrained(model_dir), out, source=str(model_dir))
    note = f"; left out the {', '.join(left_out)} stage(s), which {pipeline} has no place for" if left_out else ""
    print(f"wrote {out}: a diffusers {pipeline} folder (load it with {pipeline}.from_pretrained){note}")
    return 0
