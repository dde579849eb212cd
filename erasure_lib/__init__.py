"""erasure_lib: the thin library behind erasure-book.

Every method, attack, detector and metric of the book lives here, one module each; notebooks only
orchestrate. The entry point to a model is :func:`load_pipeline` (``profile="toy"`` or ``"sd14"``).
"""
from .loading import PROFILES, load_ip_adapter, load_pipeline
from .sampling import encode_images, generate

__all__ = ["PROFILES", "encode_images", "generate", "load_ip_adapter", "load_pipeline"]
__version__ = "0.1.0"
