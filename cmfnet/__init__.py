"""cmfnet: joint MRI reconstruction and super-resolution guided by a second contrast."""

__version__ = "0.1.0"
