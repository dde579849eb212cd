"""Test fixtures that are library code, because notebooks and CI both use them: random-weight models with
Stable Diffusion v1.4's structure (:mod:`erasure_lib.testing.sd14_model`), built offline in seconds, that
run the ``sd14`` profile end to end without the hub."""
from .sd14_model import (
    CLIP_VIT_L14_CONFIG,
    IP_ADAPTER_IMAGE_ENCODER_CONFIG,
    IP_ADAPTER_WEIGHT_NAME,
    SD14_CONFIGS,
    build_all,
    build_clip_judge,
    build_ip_adapter,
    build_sd14_test_model,
    sd14_configs,
    write_clip_tokenizer,
)

__all__ = ["CLIP_VIT_L14_CONFIG", "IP_ADAPTER_IMAGE_ENCODER_CONFIG", "IP_ADAPTER_WEIGHT_NAME", "SD14_CONFIGS",
           "build_all", "build_clip_judge", "build_ip_adapter", "build_sd14_test_model", "sd14_configs",
           "write_clip_tokenizer"]
