"""The toy zoo's architectures at a text width other than the committed one (train.py --text-width): the UNet's
cross-attention takes the text tower's states, the IP-Adapter's image tokens come out at the text width, and the
committed zoo's architecture is what the defaults build."""
import pytest
import torch

from erasure_lib import load_pipeline
from erasure_lib.toyworld import models, train


def test_defaults_build_the_committed_zoos_shapes():
    pipe = load_pipeline("toy")
    committed = pipe.unet.config
    unet = models.build_unet()
    assert unet.config.cross_attention_dim == committed.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in pipe.unet.parameters())
    clip = models.build_clip(len(pipe.tokenizer), pipe.tokenizer.bos_token_id, pipe.tokenizer.eos_token_id,
                             pipe.tokenizer.pad_token_id)
    assert clip.text_model.config.hidden_size == pipe.text_encoder.config.hidden_size


def test_a_wider_text_tower_feeds_a_unet_of_its_width():
    torch.manual_seed(0)
    clip = models.build_clip(100, 0, 1, 1, text_width=32)
    assert clip.text_model.config.hidden_size == 32 and clip.vision_model.config.hidden_size == models.HIDDEN
    assert clip.config.projection_dim == 32
    ids = torch.randint(2, 100, (2, 77))
    states = clip.text_model(ids)[0]
    assert states.shape == (2, 77, 32)
    unet = models.build_unet(cross_attention_dim=32)
    out = unet(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), encoder_hidden_states=states).sample
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(RuntimeError):  # the committed width's UNet cannot read these states
        models.build_unet(cross_attention_dim=64)(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]),
                                                  encoder_hidden_states=states)


def test_text_width_must_suit_four_heads(capsys):
    with pytest.raises(SystemExit):
        train.main(["--text-width", "30", "--part", "assemble"])
    assert "--text-width must be a positive multiple of 4" in capsys.readouterr().err
