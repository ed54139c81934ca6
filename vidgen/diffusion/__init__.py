"""Diffusion sampling over latents of any rank; the schedulers are diffusers'."""
