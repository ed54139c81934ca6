"""`vidgen generate --image / --video / --strength / --seconds`: the flags, and their checks before
the model loads (vidgen.media)."""

from __future__ import annotations

import argparse

from ..errors import VidgenError
from . import arguments as types


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    media = parser.add_argument_group("starting from your media (see docs/media.md)")
    media.add_argument("--image", metavar="IMG", help="animate a picture: the clip starts from it (scaled and "
                       "center-cropped to the model's size) and moves as the prompt says")
    media.add_argument("--video", metavar="CLIP", help="redraw a clip to the prompt (video-to-video), its motion kept "
                       "at moderate --strength")
    media.add_argument("--strength", type=types.number(low=0.0, high=1.0, low_open=True, what="strength in (0, 1]"),
                       help="with --video: how much of it is redrawn, in (0, 1] (default 0.6); with --image: how much of "
                       "the picture held still is redrawn (default 1: the keyframes from noise)")
    media.add_argument("--seconds", type=types.positive, help="clip length in seconds, longer than one window of the "
                       "base stage too (windows continue each other)")


def media_request(args: argparse.Namespace, plan) -> tuple[dict, dict]:
    """(the pipeline's media arguments, notes for the sidecar), refused before the model loads."""
    from ..media.inputs import check_fit, own_anchor_refusal, picture_notes, read_clip, read_image

    if args.image is not None and args.video is not None:
        raise VidgenError("give --image or --video, not both")
    if args.strength is not None and args.video is None and args.image is None:
        raise VidgenError("--strength goes with --video or --image (how much of the clip, or of the still picture, "
                          "is redrawn)")
    if args.seconds is not None and (args.image is not None or args.video is not None):
        raise VidgenError("--seconds makes a clip from the prompt alone: to lengthen a clip use `vidgen extend`")
    index = None
    if args.seconds is not None:
        from ..model_index import read_model_index

        if read_model_index(plan.model).anchor.image_model:  # as VideoPipeline.__call__ refuses it
            raise VidgenError(f"{plan.model}: " + own_anchor_refusal(0.0, "a longer clip"))
    if args.image is not None or args.video is not None:
        from ..model_index import read_model_index

        index = read_model_index(plan.model)
        if index.anchor.image_model and (args.video is not None or index.anchor.position != 0):  # as prepare refuses it
            raise VidgenError(f"{plan.model}: " + own_anchor_refusal(index.anchor.position,
                                                                     "--video" if args.video is not None else "a picture"))
    size, given, notes = (plan.settings.height, plan.settings.width), {}, {}
    if args.image is not None:
        picture = read_image(args.image)
        notes["image"] = f"{args.image}: " + check_fit(picture.shape[0], picture.shape[1], size, "--image")
        notes["strength"] = args.strength if args.strength is not None else 1.0  # media.conditioning.IMAGE_STRENGTH
        notes.update(picture_notes(index))
        given.update(image=picture, strength=args.strength)
    if args.video is not None:
        clip = read_clip(args.video, "--video")
        notes["video"] = f"{args.video}: " + check_fit(*clip.size, size, "--video")
        given.update(video=clip, strength=args.strength)
        notes["strength"] = args.strength if args.strength is not None else 0.6
    if args.seconds is not None:
        given["seconds"] = notes["seconds"] = args.seconds
    return given, notes
