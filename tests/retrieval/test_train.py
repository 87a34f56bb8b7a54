"""Training pieces: caption-word stripping, masking of duplicate positives, the loss going down."""

from __future__ import annotations

import pytest
import torch

from irtk.errors import InputError, UsageError
from irtk.retrieval.config import TrainConfig
from irtk.retrieval.train import (
    Example,
    _loss,
    build_encoder,
    load_pairs,
    param_groups,
    strip_caption_words,
)

from .conftest import png_b64, write_jsonl


def test_strip_caption_words():
    assert strip_caption_words("handwritten seven from the Oslo archive",
                               "Scanned form 12 from the Oslo archive, written in blue ink.") == "handwritten seven"
    assert strip_caption_words("a query", None) == "a query"
    assert strip_caption_words("Oslo", "oslo") == ""


def _examples():
    from irtk.retrieval.images import decode_image

    return [Example(f"query about topic {i % 3}", f"doc{i}", f"caption {i}", decode_image(png_b64(i)))
            for i in range(6)]


def test_other_positives_of_the_same_query_are_masked():
    torch.manual_seed(0)
    enc = build_encoder(TrainConfig(encoder="clip", model="tiny", device="cpu"))
    batch = _examples()
    positives = {}
    for e in batch:
        positives.setdefault(e.query, set()).add(e.doc_id)
    masked, _ = _loss(enc, batch, positives, 0.0)
    unmasked, _ = _loss(enc, batch, {e.query: set() for e in batch}, 0.0)
    # The loss by hand: query i against every document, the other documents of i's own query
    # (same query text, another positive) left out of the softmax, i's document the target.
    with torch.no_grad():
        q = enc.query_tensor([e.query for e in batch], None)
        d = enc.document_tensor([e.text for e in batch], [e.image for e in batch])
        logits = enc.scale() * q @ d.T
    expected = []
    for i, e in enumerate(batch):
        keep = [j for j, other in enumerate(batch) if j == i or other.query != e.query]
        row = logits[i, keep]
        expected.append(float(torch.logsumexp(row, 0) - logits[i, i]))
    assert masked.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    # Without the mask every document competes: the full-row cross-entropy, a higher loss here.
    full = [float(torch.logsumexp(logits[i], 0) - logits[i, i]) for i in range(len(batch))]
    assert unmasked.item() == pytest.approx(sum(full) / len(full), rel=1e-5)
    assert unmasked.item() > masked.item()


def test_ciea_loss_decreases_on_a_fixed_batch():
    cfg = TrainConfig(encoder="ciea", text_model="tiny", vision="tiny", device="cpu", seed=0,
                      freeze_vision=False)
    enc = build_encoder(cfg)
    batch = _examples()
    positives = {}
    for e in batch:
        positives.setdefault(e.query, set()).add(e.doc_id)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-3)
    enc.module.train()
    losses = []
    for _ in range(8):
        loss, stats = _loss(enc, batch, positives, 0.1)
        assert "comp" in stats
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_logit_scale_gets_gradient_and_learns_from_100():
    cfg = TrainConfig(encoder="ciea", text_model="tiny", device="cpu", seed=0, lr=1e-2)
    enc = build_encoder(cfg)
    assert enc.scale().item() == pytest.approx(100.0)  # CIEA's init, exp(ln 100) = 100.0000076
    batch = _examples()
    positives = {e.query: {e.doc_id} for e in batch}
    loss, _ = _loss(enc, batch, positives, 0.1)
    loss.backward()
    assert enc.log_scale.grad is not None and enc.log_scale.grad.item() != 0.0
    groups = param_groups(enc, cfg)
    scale_group = [g for g in groups if any(p is enc.log_scale for p in g["params"])]
    assert len(scale_group) == 1 and scale_group[0]["weight_decay"] == 0.0
    assert all(g["weight_decay"] == cfg.weight_decay for g in groups if g is not scale_group[0])
    opt = torch.optim.AdamW(groups)
    values = []
    for _ in range(3):
        opt.zero_grad()
        loss, _ = _loss(enc, batch, positives, 0.1)
        loss.backward()
        opt.step()
        enc.clamp_scale()
        values.append(enc.scale().item())
    assert values[-1] != pytest.approx(100.0, abs=1e-3)  # it moved
    assert all(v <= 100.0 + 1e-3 for v in values)  # and stays capped at 100
    with torch.no_grad():
        enc.log_scale.fill_(10.0)
    enc.clamp_scale()
    assert enc.scale().item() == pytest.approx(100.0, rel=1e-5)


def test_config_validation():
    with pytest.raises(UsageError, match="--negatives-from needs --docs"):
        TrainConfig(negatives_from="idx")
    with pytest.raises(UsageError, match="--extractor must be one of released, prenorm"):
        TrainConfig(extractor="post")
    with pytest.raises(UsageError, match="trains text, clip, ciea"):
        TrainConfig(encoder="x:y")


def test_frozen_vision_tower_gets_no_gradient():
    # Frozen is the default, as the released scripts freeze CLIP.
    enc = build_encoder(TrainConfig(encoder="ciea", text_model="tiny", device="cpu"))
    loss, _ = _loss(enc, _examples(), {f"query about topic {i}": set() for i in range(3)}, 0.1)
    loss.backward()
    assert all(p.grad is None for p in enc.module.visual.parameters())
    assert any(p.grad is not None for p in enc.module.projector.parameters())


def test_bad_pairs(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "doc_id": "d"}])
    with pytest.raises(InputError, match="record 1: field 'text': positive document has no text"):
        load_pairs(path, True)
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "doc_id": "d", "text": "t", "image": "AAAA"}])
    with pytest.raises(InputError, match="record 1: field 'image'"):
        load_pairs(path, True)
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": 3, "doc_id": "d", "text": "t"}])
    with pytest.raises(InputError, match="field 'query': expected string"):
        load_pairs(path, True)
