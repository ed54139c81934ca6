"""Interoperability with diffusers' own video models: ModelScope / zeroscope (`UNet3DConditionModel`)
and AnimateDiff (`UNetMotionModel`) folders run in vidgen's cascade as they are, and go back out
as folders diffusers' pipelines load (docs/interop.md)."""
