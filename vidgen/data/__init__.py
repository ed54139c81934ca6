"""Data: reading video, sampling clips, manifests, and the synthetic shapes world."""
