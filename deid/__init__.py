"""deid: privacy de-identification of faces with a style-based generator."""

__version__ = "0.1.0"
