"""Other projects' checkpoint layouts in and out: diffusers' own video models (ModelScope /
zeroscope `UNet3DConditionModel`, AnimateDiff `UNetMotionModel`) run in vidgen's cascade as they are
and go back out as folders diffusers' pipelines load (docs/interop.md); SDXL layouts and LoRA
adapters (docs/interop-more.md)."""
