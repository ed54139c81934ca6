"""vidgen: text-to-video generation after Make-A-Video (Singer et al. 2022)."""

__version__ = "0.1.0"

# Exported lazily: `import vidgen` (and `vidgen --help`) stays fast, torch and diffusers load on first use.
_EXPORTS = {
    "inflate_unet": "vidgen.models.inflate",
    "VideoUNet": "vidgen.models.inflate",
    "VideoModel": "vidgen.model_folder",
    "VideoPipeline": "vidgen.pipeline",
    "VideoOutput": "vidgen.sampling_call",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidgen' has no attribute {name!r}")
