"""Ship a trained cascade as vidgen's embedded default model (vidgen/default_model/).

    python tools/package_default_model.py runs/shapes/sr/model
    python tools/package_default_model.py runs/shapes/sr/model defaults.num_inference_steps=25 interp.num_inference_steps=10 interp.strength=0.4 sr.num_inference_steps=10 sr.strength=0.5
                                            # the settings of the shipped model
    python tools/package_default_model.py runs/shapes/sr/model --base runs/shapes/video-rep/model ...
                                            # the base stage from a later video-stage run
    python tools/package_default_model.py runs/shapes/sr/model --critic runs/shapes/critic/model ...
                                            # with the arrow critic of a critic-stage run
    python tools/package_default_model.py vidgen/default_model --image-base runs/shapes/image-base/model ...
                                            # with a base stage for image-to-video (anchored at frame 0)

Weights go in half precision and the text encoder is named ("minilm", the packaged
all-MiniLM-L6-v2, hash-checked when loaded) rather than copied, which keeps the folder small.
"""

from __future__ import annotations

import argparse
import sys

from vidgen.errors import VidgenError
from vidgen.packaged import DEFAULT_MODEL
from vidgen.shipping import package_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained vidgen model folder (e.g. the sr run's model/)")
    parser.add_argument("settings", nargs="*", metavar="SECTION.KEY=VALUE",
                        help="sampling settings to ship (sections: defaults, interp, sr)")
    parser.add_argument("--base", metavar="DIR",
                        help="take the base stage from this vidgen video model (a later video-stage run) instead")
    parser.add_argument("--critic", metavar="DIR",
                        help="add the arrow critic of this vidgen model folder (a critic-stage run's model/)")
    parser.add_argument("--image-base", metavar="DIR",
                        help="add the base stage of this vidgen video model (trained with model.image_conditioning=true "
                             "model.anchor_position=0) for image-to-video")
    parser.add_argument("--out", default=str(DEFAULT_MODEL), help=f"where to write it (default {DEFAULT_MODEL})")
    args = parser.parse_intermixed_args()  # --base may come after the settings
    settings: dict[str, dict] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot):
            parser.error(f"settings are SECTION.KEY=VALUE, got {item!r}")
        if value in ("true", "false"):
            settings.setdefault(section, {})[name] = value == "true"
            continue
        try:
            settings.setdefault(section, {})[name] = float(value) if "." in value else int(value)
        except ValueError:  # a word, e.g. defaults.autocast=auto; package_model checks each setting's type
            settings.setdefault(section, {})[name] = value
    try:
        folder = package_model(args.model, args.out, settings=settings, base=args.base, critic=args.critic,
                               image_base=args.image_base)
    except VidgenError as exc:
        sys.exit(f"error: {exc}")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
