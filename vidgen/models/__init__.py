"""Networks: temporal layers, inflation of image U-Nets into video U-Nets, VAE helpers."""
