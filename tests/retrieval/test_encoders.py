"""Encoders: shapes, normalisation, the complementary extractor's weights, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irtk.errors import ModelError, UsageError
from irtk.retrieval.encoders import get_encoder
from irtk.retrieval.encoders.ciea import ComplementaryExtractor
from irtk.retrieval.images import decode_image

from .conftest import png_b64


def images(n: int) -> list:
    return [decode_image(png_b64(i)) for i in range(n)]


# --- the complementary extractor on constructed cases ------------------------------------------


def test_patch_equal_to_a_caption_token_gets_weight_zero():
    caption = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]])
    patches = torch.tensor([[[2.0, 0, 0, 0],      # parallel to caption token 0
                             [0, 0, 1.0, 0],      # orthogonal to every caption token
                             [0, -3.0, 0, 0],     # opposite to token 1, orthogonal to token 0
                             [-1.0, -1.0, 0, 0]]])  # opposite to both: max cos = -1/sqrt2
    w = ComplementaryExtractor.weights(patches, caption, torch.tensor([[True, True]]))
    expected = [0.0, 0.5, 0.5, 1 - (1 - 1 / np.sqrt(2)) / 2]
    assert w[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_masked_caption_tokens_are_ignored_and_no_caption_means_weight_one():
    caption = torch.tensor([[[1.0, 0], [0, 1.0]], [[1.0, 0], [0, 1.0]]])
    patches = torch.tensor([[[1.0, 0]], [[1.0, 0]]])
    mask = torch.tensor([[False, True], [False, False]])
    w = ComplementaryExtractor.weights(patches, caption, mask)
    assert w[0, 0].item() == pytest.approx(0.5)  # only the orthogonal token counts
    assert w[1, 0].item() == 1.0  # no caption tokens at all


def test_dead_keys_receive_no_attention():
    torch.manual_seed(0)
    layer = ComplementaryExtractor(16, heads=4).eval()
    x = torch.randn(1, 5, 16)
    w = torch.tensor([[1.0, 0.7, 0.0, 0.9, 0.3]])  # patch 2 fully described by the caption
    y = layer(x, w)
    x2 = x.clone()
    x2[0, 2] += 10.0  # change the dead patch: no other patch may notice
    y2 = layer(x2, w)
    others = [0, 1, 3, 4]
    assert torch.allclose(y[0, others], y2[0, others], atol=1e-6)
    assert not torch.allclose(y[0, 2], y2[0, 2])


def test_all_keys_dead_gives_finite_output():
    layer = ComplementaryExtractor(8, heads=2)
    y = layer(torch.randn(2, 3, 8), torch.zeros(2, 3))
    assert torch.isfinite(y).all()


def test_weights_scale_attention_logits():
    torch.manual_seed(0)
    layer = ComplementaryExtractor(8, heads=1).eval()
    x = torch.randn(1, 4, 8)
    # With every w equal to 1 the layer is plain attention; lower weights change the output.
    assert not torch.allclose(layer(x, torch.ones(1, 4)), layer(x, torch.full((1, 4), 0.3)))


def test_released_extractor_block_is_post_norm_with_dropout():
    torch.manual_seed(0)
    layer = ComplementaryExtractor(16, heads=4)  # the default: the released code's layer
    assert isinstance(layer.mlp[1], torch.nn.LeakyReLU) and layer.mlp[0].out_features == 2048
    x = torch.randn(2, 5, 16) * 7 + 3
    w = torch.rand(2, 5)
    y = layer.eval()(x, w)
    # Post-norm: the output is the last LayerNorm's (its affine starts as the identity).
    assert torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(y.std(-1, unbiased=False), torch.ones(2, 5), atol=1e-3)
    assert torch.equal(y, layer(x, w))  # eval: dropout off, deterministic
    assert not torch.equal(layer.train()(x, w), y)  # train: dropout 0.05 active
    pre = ComplementaryExtractor(16, heads=4, block="prenorm").eval()
    assert not torch.allclose(pre(x, w).mean(-1), torch.zeros(2, 5), atol=1e-2)  # residual stream
    with pytest.raises(ModelError, match="extractor block"):
        ComplementaryExtractor(16, heads=4, block="nope")


def test_image_only_path_skips_the_extractor_unless_asked(tiny_ciea):
    enc = get_encoder("ciea", tiny_ciea, device="cpu")
    enc.module.eval()  # no dropout, so only the weights can change the output
    ims = images(2)
    with torch.no_grad():
        before = enc.image_only_tensor(ims, ["caption one", "caption two"])
        for p in enc.module.extractor.parameters():
            p.add_(torch.randn_like(p))
        after = enc.image_only_tensor(ims, ["caption one", "caption two"])
        # The released code's image-only embedding does not go through the extractor.
        assert torch.allclose(before, after, atol=1e-6)
        enc.meta["comp_via_extractor"] = True  # the paper figure's variant does
        assert not torch.allclose(enc.image_only_tensor(ims, ["caption one", "caption two"]), after, atol=1e-4)


# --- encoders -----------------------------------------------------------------------------------


def _check(vecs: np.ndarray, n: int, dim: int) -> None:
    assert vecs.shape == (n, dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_clip_shapes_normalisation_and_sum(clip_encoder):
    ims = images(3)
    docs = clip_encoder.encode_documents(["a red kite", None, "a blue boat"], [None, ims[1], ims[2]])
    _check(docs, 3, clip_encoder.dim)
    text = clip_encoder.encode_queries(["a blue boat"])
    image = clip_encoder.encode_documents([None], [ims[2]])
    summed = text[0] + image[0]
    assert np.allclose(docs[2], summed / np.linalg.norm(summed), atol=1e-5)
    assert np.allclose(docs[0], clip_encoder.encode_queries(["a red kite"])[0], atol=1e-5)


def test_ciea_shapes_normalisation_and_checkpoint_round_trip(tiny_ciea):
    enc = get_encoder("ciea", tiny_ciea, device="cpu")
    ims = images(4)
    texts = ["caption one", "a text document", None, "caption four"]
    docs = enc.encode_documents(texts, [ims[0], None, ims[2], ims[3]], batch_size=3)
    _check(docs, 4, enc.dim)
    # A text document is plain text through the encoder: identical to the query encoding.
    assert np.allclose(docs[1], enc.encode_queries(["a text document"])[0], atol=1e-5)
    # The image changes the embedding of the same caption.
    with_image = enc.encode_documents(["caption one"], [ims[0]])
    without = enc.encode_documents(["caption one"], [None])
    assert not np.allclose(with_image, without, atol=1e-3)
    again = get_encoder("ciea", tiny_ciea, device="cpu")
    assert np.allclose(again.encode_documents(texts, [ims[0], None, ims[2], ims[3]]), docs, atol=1e-6)
    io = enc.image_only_tensor(ims[:2]).detach().numpy()
    _check(io, 2, enc.dim)


def test_ciea_long_captions_fit_the_position_table(tiny_ciea):
    enc = get_encoder("ciea", tiny_ciea, device="cpu")
    long = " ".join(["word"] * 400)  # truncated so caption + image slots fit 128 positions
    lengths = []
    hook = enc.module.text.register_forward_pre_hook(
        lambda mod, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        ims = images(2)
        docs = enc.encode_documents([long, long, long], [ims[0], ims[1], None])
    finally:
        hook.remove()
    _check(docs, 3, enc.dim)
    positions = enc.module.text.config.max_position_embeddings
    assert lengths and max(lengths) == positions  # filled to the table, never past it
    # Truncation cut the caption, not the image slots: the image still decides the embedding.
    assert not np.allclose(docs[0], docs[1], atol=1e-3)
    assert not np.allclose(docs[0], docs[2], atol=1e-3)


def test_ciea_batches_mixed_documents_like_single_ones(tiny_ciea):
    enc = get_encoder("ciea", tiny_ciea, device="cpu")
    ims = images(3)
    texts = ["short", "a much longer caption with many more words in it", "mid length text"]
    batch = enc.encode_documents(texts, [ims[0], ims[1], None])
    single = np.concatenate([enc.encode_documents([t], [im]) for t, im in zip(texts, [ims[0], ims[1], None], strict=True)])
    assert np.allclose(batch, single, atol=1e-5)


def test_encoder_registry_errors(tiny_clip, tmp_path):
    with pytest.raises(UsageError, match="--encoder must be one of text, clip, ciea or module:attr"):
        get_encoder("nope")
    with pytest.raises(UsageError, match="needs --model CHECKPOINT"):
        get_encoder("ciea")
    with pytest.raises(UsageError, match="is a 'clip' checkpoint"):
        get_encoder("ciea", tiny_clip)
    with pytest.raises(UsageError, match="cannot import"):
        get_encoder("no_such_module_xyz:Factory")
    with pytest.raises(ModelError, match="cannot load open_clip model"):
        get_encoder("clip", "No-Such-Arch/none")


CALLS: list[dict] = []


def recording_encoder(model=None, device=None, **options):
    """A user's own factory, named by module:attr in the test below."""
    from irtk.retrieval.encoders.text import TextEncoder

    CALLS.append({"model": model, "device": device, **options})
    return TextEncoder.from_name(model, device=device, **options)


def test_module_attr_encoder():
    # module:attr names a factory called with model=, device= and the caller's options.
    CALLS.clear()
    enc = get_encoder(f"{__name__}:recording_encoder", "tiny", device="cpu", logit_scale=5.0)
    assert CALLS == [{"model": "tiny", "device": "cpu", "logit_scale": 5.0}]
    assert enc.scale().item() == pytest.approx(5.0)
    assert enc.encode_queries(["x"]).shape == (1, enc.dim)
    # A dotted attr reaches a classmethod, as the built-in names do.
    dotted = get_encoder("irtk.retrieval.encoders.text:TextEncoder.from_name", "tiny", device="cpu")
    assert dotted.config()["random_init"] is True


@pytest.mark.slow
def test_text_encoder_matches_the_shared_embedder():
    from irtk.embedding import embed

    enc = get_encoder("text", device="cpu")
    texts = ["where is the lighthouse", "bell foundry records"]
    vecs = enc.encode_documents(texts)
    _check(vecs, 2, 384)
    assert np.allclose(vecs, embed(texts), atol=1e-5)
