"""vidgen: text-to-video generation after Make-A-Video (Singer et al. 2022)."""

__version__ = "0.1.0"
