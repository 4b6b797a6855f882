"""GAMUS TIMF (Xiong et al., arXiv 2305.14914): intermediary-token fusion of RGB and nDSM.

Confirmed by the paper's abstract and fusion figure (panel f): a Transformer gathers from
[height tokens; intermediary token; RGB tokens] into the intermediary token, which then feeds
the attention of two modality-specific Transformers. Reconstructed (spec 2.4 [INFER]): two
hierarchical MiT (SegFormer) streams, fusion once per stage through M learned tokens per stage
(gather: tokens attend to both streams; distribute: each stream attends to its own
spatially-reduced tokens plus the updated intermediary tokens), stage output = RGB + height maps,
SegFormer all-MLP decoder. The defaults are MiT-B0 sized, so a forward runs on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from segmentation_models_pytorch.encoders import get_encoder
from segmentation_models_pytorch.encoders.mix_transformer import MixVisionTransformer
from timm.layers import trunc_normal_
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.errors import ModelError
from geoseg.models.base import SegModel
from geoseg.models.blocks import HUB_WEIGHTS
from geoseg.models.registry import register
from geoseg.models.weights import adapt_first_conv, load_encoder_weights

#: MiT variants whose ImageNet weights smp can download ("imagenet" weights need these dims)
MIT_DIMS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
}


class TIMFArgs(StrictModel):
    """Arguments of ``timf``."""

    embed_dims: tuple[int, int, int, int] = (32, 64, 160, 256)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: float = Field(4.0, gt=0.0)
    #: number M of intermediary tokens per stage (the paper's figure draws one)
    num_tokens: int = Field(1, ge=1)
    decoder_dim: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    #: local .safetensors MiT weights (loaded into both streams, patch embeds adapted to the band
    #: count) or "imagenet" (needs network and embed_dims/depths of mit_b0, b1 or b2)
    encoder_weights: str | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> TIMFArgs:
        for dim, heads in zip(self.embed_dims, self.num_heads, strict=True):
            if dim % heads:
                raise ValueError(f"embed dim {dim} is not divisible by {heads} heads")
        return self


class TokenAttention(nn.Module):
    """Multi-head attention of ``x`` over extra ``context`` tokens (and optionally itself).

    With ``self_context`` the keys/values are [SR(x); context], where SR is the spatial
    reduction of MiT (a strided conv + LayerNorm), so the stream keeps its own attention and
    additionally reads the intermediary tokens.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int = 1, self_context: bool = True):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.self_context = self_context
        use_sr = self_context and sr_ratio > 1
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if use_sr else None
        self.sr_norm = nn.LayerNorm(dim) if self.sr is not None else None

    def forward(self, x: Tensor, context: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        b, n, c = x.shape
        if self.self_context:
            own = x
            if self.sr is not None:
                assert hw is not None
                own = self.sr(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
                own = self.sr_norm(own)
            context = torch.cat([own, context], dim=1)
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        kv = self.kv(context).reshape(b, context.shape[1], 2, self.heads, -1)
        k, v = kv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Sequential):
    """Transformer feed-forward: linear, GELU, linear."""

    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class IntermediaryFusion(nn.Module):
    """One TIMF fusion step between the RGB and height token sets of a stage.

    1. gather: F' = F + Attn(LN(F), LN([X_h; F; X_rgb])), F' += MLP(LN(F'))
    2. distribute, per stream m: X_m += Attn(LN(X_m), [SR(LN(X_m)); LN(F')]), X_m += MLP(LN(X_m))
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int, num_tokens: int, mlp_ratio: float):
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(1, num_tokens, dim))
        trunc_normal_(self.tokens, std=0.02)
        self.g_norm_q = nn.LayerNorm(dim)
        self.g_norm_kv = nn.LayerNorm(dim)
        self.g_attn = TokenAttention(dim, heads, self_context=False)
        self.g_norm_mlp = nn.LayerNorm(dim)
        self.g_mlp = Mlp(dim, mlp_ratio)
        self.d_norm_tok = nn.LayerNorm(dim)
        self.d_norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in ("rgb", "height")})
        self.d_attn = nn.ModuleDict({m: TokenAttention(dim, heads, sr_ratio) for m in ("rgb", "height")})
        self.d_norm_mlp = nn.ModuleDict({m: nn.LayerNorm(dim) for m in ("rgb", "height")})
        self.d_mlp = nn.ModuleDict({m: Mlp(dim, mlp_ratio) for m in ("rgb", "height")})

    def forward(self, rgb: Tensor, height: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse two B×C×H×W maps; returns the updated maps."""
        b, c, h, w = rgb.shape
        xs = {"rgb": rgb.flatten(2).transpose(1, 2), "height": height.flatten(2).transpose(1, 2)}
        tok = self.tokens.expand(b, -1, -1)
        ctx = self.g_norm_kv(torch.cat([xs["height"], tok, xs["rgb"]], dim=1))
        tok = tok + self.g_attn(self.g_norm_q(tok), ctx)
        tok = tok + self.g_mlp(self.g_norm_mlp(tok))
        tok = self.d_norm_tok(tok)
        out = []
        for m, x in xs.items():
            x = x + self.d_attn[m](self.d_norm[m](x), tok, (h, w))
            x = x + self.d_mlp[m](self.d_norm_mlp[m](x))
            out.append(x.transpose(1, 2).reshape(b, c, h, w))
        return out[0], out[1]


class MLPDecoder(nn.Module):
    """SegFormer all-MLP decoder: per-stage linear to D, upsample to stride 4, concat, fuse."""

    def __init__(self, in_dims: Sequence[int], dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim * len(in_dims), dim, 1, bias=False), nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
        )  # fmt: skip
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        s4 = feats[0].shape[-2:]
        x = [
            F.interpolate(p(f), size=s4, mode="bilinear", align_corners=False) if i else p(f)
            for i, (p, f) in enumerate(zip(self.proj, feats, strict=True))
        ]
        logits = self.classifier(self.fuse(torch.cat(x, dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _stream(bands: int, a: TIMFArgs) -> MixVisionTransformer:
    return MixVisionTransformer(
        in_chans=bands, embed_dims=list(a.embed_dims), num_heads=list(a.num_heads),
        mlp_ratios=[a.mlp_ratio] * 4, qkv_bias=True, depths=list(a.depths),
        sr_ratios=list(a.sr_ratios), drop_path_rate=a.drop_path,
    )  # fmt: skip


@register("timf")
class TIMF(SegModel):
    """Two MiT streams (``image``: any bands, ``height``: nDSM) fused per stage by TIMF tokens."""

    Args: ClassVar[type[StrictModel]] = TIMFArgs
    required: ClassVar[tuple[str, ...]] = ("image", "height")
    size_multiple: ClassVar[int] = 32
    extra_modalities_hint = "stack further bands into image or height"

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: TIMFArgs):
        super().__init__(modalities, num_classes, args)
        self.rgb = _stream(modalities["image"], args)
        self.height = _stream(modalities["height"], args)
        self.fusion = nn.ModuleList(
            IntermediaryFusion(d, h, sr, args.num_tokens, args.mlp_ratio)
            for d, h, sr in zip(args.embed_dims, args.num_heads, args.sr_ratios, strict=True)
        )
        self.decoder = MLPDecoder(args.embed_dims, args.decoder_dim, num_classes, args.dropout)
        if args.encoder_weights:
            self._load_stream_weights(args.encoder_weights)

    def _load_stream_weights(self, weights: str) -> None:
        if weights not in HUB_WEIGHTS:
            for stream in (self.rgb, self.height):
                load_encoder_weights(stream, weights)
            return
        a = self.args
        name = next((n for n, (d, dp) in MIT_DIMS.items() if (d, dp) == (a.embed_dims, a.depths)), None)
        if name is None:
            raise ModelError(
                f"encoder_weights={weights!r} needs the embed_dims/depths of one of "
                f"{sorted(MIT_DIMS)}; set them or give a local .safetensors file"
            )
        state = get_encoder(name, weights=weights).state_dict()
        for stream in (self.rgb, self.height):
            own = stream.state_dict()
            stream.load_state_dict({
                k: adapt_first_conv(v, own[k].shape[1]) if v.shape != own[k].shape else v
                for k, v in state.items() if k in own
            }, strict=False)  # fmt: skip

    @property
    def halo(self) -> int:
        # spatial-reduction attention is global over the tile, but half the effective receptive
        # field lies within ~40 px (r50, benchmarks/models.py)
        return 64

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        x_rgb, x_h = inputs["image"], inputs["height"]
        feats = []
        for i, fusion in enumerate(self.fusion, start=1):
            x_rgb = getattr(self.rgb, f"block{i}")(getattr(self.rgb, f"patch_embed{i}")(x_rgb))
            x_h = getattr(self.height, f"block{i}")(getattr(self.height, f"patch_embed{i}")(x_h))
            x_rgb, x_h = fusion(x_rgb, x_h)
            x_rgb = getattr(self.rgb, f"norm{i}")(x_rgb)
            x_h = getattr(self.height, f"norm{i}")(x_h)
            feats.append(x_rgb + x_h)
        return self.decoder(feats, inputs["image"].shape[-2:])
