"""irtk: clarifying deep-research agents, entropy in RL fine-tuning, multimodal retrieval."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("irtk")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
