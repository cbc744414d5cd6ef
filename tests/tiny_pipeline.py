"""A tiny Stable Diffusion pipeline with random weights, saved as a user's model folder would be.

Nothing is downloaded: the UNet, VAE and CLIP text encoder are built from tiny configs with
seeded random weights, the CLIP tokenizer from a byte-level BPE vocabulary made here (the
printable ASCII bytes, no merges, CLIP's ``</w>`` end-of-word forms and its two special tokens).
:func:`build` ``save_pretrained()``s the pipeline into a folder (``model_index.json`` at its
top, one sub-folder per component), which the ``diffusers`` backend then loads through the same
code as any other model directory. One image of 64x64 takes a few tens of milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

LATENT_CHANNELS = 4
CROSS_ATTENTION_DIM = 32
VAE_SCALE = 2
"""The tiny VAE halves each side once (two blocks): images are multiples of 2 x 8 = 16 px."""


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-level vocabulary in miniature: every byte as GPT-2 maps it to a printable
    character, each alone and as a word's last character (``</w>``), then the special tokens."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):  # GPT-2's bytes_to_unicode: the rest shifted past 255
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build(folder: Path) -> Path:
    """Build the tiny pipeline and save it into ``folder``; return ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
    )
    vocab = _byte_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=32,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # build one by hand: python -m tests.tiny_pipeline FOLDER
    import sys

    print(build(Path(sys.argv[1])))
