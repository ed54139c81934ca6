"""Loading other projects' checkpoint layouts: SDXL (sdxl), LoRA adapters (lora)."""
