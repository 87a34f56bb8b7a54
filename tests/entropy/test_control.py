"""Entropy controls on hand-made batches: which tokens each rule drops, weights or penalises."""

from __future__ import annotations

import pytest
import torch

from irtk.entropy.config import CONTROLS, EntropyControlConfig
from irtk.entropy.control import ControlResult, apply_control, clip_b, clip_cov, clip_v, kl_cov
from irtk.entropy.math import TokenStats, token_stats
from irtk.errors import UsageError


def stats_with(s: torch.Tensor | None = None, d: torch.Tensor | None = None,
               entropy: torch.Tensor | None = None) -> TokenStats:
    shape = next(t for t in (s, d, entropy) if t is not None).shape
    zero = torch.zeros(shape)
    s = zero if s is None else s
    d = zero if d is None else d
    return TokenStats(entropy=zero if entropy is None else entropy, logp=zero, s=s, expected_s=d + s, d=d)


def test_defaults_are_the_papers() -> None:
    cfg = EntropyControlConfig()
    assert (cfg.entropy_control, cfg.clipb_mu, cfg.clipv_mu, cfg.clipv_max_frac) == ("none", 2.5, 8.5, 1e-4)
    assert (cfg.cov_ratio, cfg.clip_cov_lb, cfg.clip_cov_ub, cfg.kl_cov_coef) == (2e-4, 1.0, 5.0, 1.0)
    assert cfg.top_entropy_quantile == 0.2
    assert set(CONTROLS) == {"none", "clipb", "clipv", "clip-cov", "kl-cov", "top-entropy", "bonus"}


@pytest.mark.parametrize("field,value", [("clipb_mu", 0.0), ("clipv_max_frac", 1.5), ("cov_ratio", 0.0),
                                         ("clip_cov_lb", 9.0), ("top_entropy_quantile", 0.0),
                                         ("entropy_control", "nope")])
def test_bad_settings_are_usage_errors(field: str, value: object) -> None:
    with pytest.raises(UsageError):
        EntropyControlConfig(**{field: value})


def test_module_attr_escape_hatch() -> None:
    assert CONTROLS.load("irtk.entropy.control:clip_b") is clip_b
    cfg = EntropyControlConfig(entropy_control="irtk.entropy.control:no_control")
    mask = torch.ones(1, 3)
    result = apply_control(cfg, advantages=torch.ones(1), mask=mask)
    assert result.keep.all() and result.stats["clip_fraction"] == 0.0


def test_clip_b_drops_only_negative_advantage_tokens_far_below_the_mean() -> None:
    # 2 sequences x 10 tokens; S ~ 0 except three outliers far below the mean.
    s = torch.zeros(2, 10)
    s[0, 3] = -10.0  # A < 0: clipped
    s[1, 4] = -10.0  # A > 0: kept (positive-advantage tokens are never clipped)
    s[0, 9] = -10.0  # padding: not a token at all
    mask = torch.ones(2, 10)
    mask[0, 9] = 0
    advantages = torch.tensor([-1.0, 2.0])
    result = clip_b(stats=stats_with(s=s), advantages=advantages, mask=mask,
                    config=EntropyControlConfig(clipb_mu=2.5))
    expected = mask.bool().clone()
    expected[0, 3] = False
    assert torch.equal(result.keep, expected)
    assert result.stats["clip_fraction"] == pytest.approx(1 / 19)
    assert result.stats["clip_fraction_neg"] == pytest.approx(1 / 9)
    # A zero advantage is left alone too.
    zero = clip_b(stats=stats_with(s=s), advantages=torch.tensor([0.0, 2.0]), mask=mask,
                  config=EntropyControlConfig())
    assert torch.equal(zero.keep, mask.bool())


def test_clip_b_clips_nothing_when_s_is_constant() -> None:
    s = torch.full((1, 6), 0.3)
    result = clip_b(stats=stats_with(s=s), advantages=torch.tensor([-1.0]), mask=torch.ones(1, 6),
                    config=EntropyControlConfig(clipb_mu=0.001))
    assert result.keep.all() and result.stats["clip_fraction"] == 0.0


def test_clip_v_drops_large_d_on_negative_tokens_and_the_cap_keeps_the_largest() -> None:
    d = torch.zeros(4, 10)
    d[0, 1], d[0, 2], d[1, 5] = 30.0, 20.0, 10.0  # negative-advantage rows 0 and 1
    d[2, 0] = 40.0  # positive-advantage row: never clipped
    advantages = torch.tensor([-1.0, -0.5, 1.0, 0.0])
    mask = torch.ones(4, 10)
    uncapped = clip_v(stats=stats_with(d=d), advantages=advantages, mask=mask,
                      config=EntropyControlConfig(clipv_mu=1.0, clipv_max_frac=1.0))
    dropped = {tuple(i) for i in (~uncapped.keep).nonzero().tolist()}
    assert dropped == {(0, 1), (0, 2), (1, 5)}
    capped = clip_v(stats=stats_with(d=d), advantages=advantages, mask=mask,
                    config=EntropyControlConfig(clipv_mu=1.0, clipv_max_frac=2 / 40))
    assert {tuple(i) for i in (~capped.keep).nonzero().tolist()} == {(0, 1), (0, 2)}
    assert capped.stats["clip_fraction"] == pytest.approx(2 / 40)
    assert capped.stats["flagged_fraction"] == pytest.approx(3 / 40)
    # The cap is at least one token: the largest D goes first.
    one = clip_v(stats=stats_with(d=d), advantages=advantages, mask=mask,
                 config=EntropyControlConfig(clipv_mu=1.0, clipv_max_frac=1e-4))
    assert {tuple(i) for i in (~one.keep).nonzero().tolist()} == {(0, 1)}


def test_clip_v_threshold_is_on_uncentred_d() -> None:
    # D shifted far from 0 with a small spread: uncentred D > mu * std everywhere.
    d = 100.0 + torch.arange(8.0).reshape(1, 8)
    result = clip_v(stats=stats_with(d=d), advantages=torch.tensor([-1.0]), mask=torch.ones(1, 8),
                    config=EntropyControlConfig(clipv_mu=8.5, clipv_max_frac=1.0))
    assert not result.keep.any()


def covariance_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Advantages +-1 (mean 0), mean log-prob 0.625: cov = A * (logp - 0.625) is 1.375 at (0, 0)
    # and 3.625 at (1, 1) (both in the band (1, 5)), 5.375 at (0, 1) (above it), below 1 elsewhere.
    advantages = torch.tensor([1.0, -1.0])
    logps = torch.tensor([[2.0, 6.0, 0.0, 0.1], [-0.1, -3.0, 0.0, 0.0]])
    mask = torch.ones(2, 4)
    return advantages, logps, mask


def test_clip_cov_detaches_r_of_the_tokens_in_the_band_but_keeps_them_counted() -> None:
    advantages, logps, mask = covariance_batch()
    cfg = EntropyControlConfig(cov_ratio=1 / 8, clip_cov_lb=1.0, clip_cov_ub=5.0)
    picks = set()
    for seed in range(6):
        result = clip_cov(advantages=advantages, mask=mask, logps=logps, config=cfg,
                          generator=torch.Generator().manual_seed(seed))
        assert result.keep.all()  # detached tokens stay in the token-mean denominator
        zeroed = (result.weight == 0).nonzero().tolist()
        assert len(zeroed) == 1
        picks.add(tuple(zeroed[0]))
        assert result.stats["cov_band_fraction"] == pytest.approx(2 / 8)
    assert picks == {(0, 0), (1, 1)}  # random among the band, never outside it
    again = [clip_cov(advantages=advantages, mask=mask, logps=logps, config=cfg,
                      generator=torch.Generator().manual_seed(3)).weight for _ in range(2)]
    assert torch.equal(*again)


def test_kl_cov_penalises_the_top_covariance_tokens_with_a_gradient() -> None:
    advantages, logps, mask = covariance_batch()
    logps = logps.clone().requires_grad_(True)
    old = logps.detach() - 0.5
    result = kl_cov(advantages=advantages, mask=mask, logps=logps, old_logps=old,
                    config=EntropyControlConfig(cov_ratio=2 / 8, kl_cov_coef=2.0))
    assert result.keep.all()
    penalised = (result.extra_loss != 0).nonzero().tolist()
    assert penalised == [[0, 1], [1, 1]]  # covariance 6 and 3: the two largest
    assert result.extra_loss[0, 1].item() == pytest.approx(2.0 * 0.5)
    result.extra_loss.sum().backward()
    assert (logps.grad != 0).nonzero().tolist() == penalised


def test_top_entropy_keeps_the_high_entropy_quantile() -> None:
    h = torch.tensor([[0.1, 2.0, 0.5, 3.0], [1.0, 0.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    result = CONTROLS.load("top-entropy")(stats=stats_with(entropy=h), mask=mask,
                                          config=EntropyControlConfig(top_entropy_quantile=0.5),
                                          advantages=torch.zeros(2))
    assert result.keep.tolist() == [[False, True, False, True], [True, False, False, False]]
    assert result.stats["clip_fraction"] == pytest.approx(3 / 6)


def test_entropy_bonus_is_a_per_token_term_with_gradient() -> None:
    h = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    result: ControlResult = CONTROLS.load("bonus")(entropies=h, mask=mask, advantages=torch.ones(1),
                                                   config=EntropyControlConfig(entropy_coef=0.1))
    assert result.extra_loss[0].tolist() == pytest.approx([-0.1, -0.2, 0.0])
    result.extra_loss.sum().backward()
    assert h.grad[0].tolist() == pytest.approx([-0.1, -0.1, 0.0])


def test_apply_control_computes_the_statistics_from_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 400, generator=g) * 4
    targets = torch.randint(0, 400, (3, 5), generator=g)
    mask = torch.ones(3, 5)
    advantages = torch.tensor([-1.0, 1.0, -0.5])
    cfg = EntropyControlConfig(entropy_control="clipb", clipb_mu=0.5)
    from_logits = apply_control(cfg, advantages=advantages, mask=mask, logits=logits, targets=targets)
    from_stats = apply_control(cfg, advantages=advantages, mask=mask,
                               stats=token_stats(logits, targets, mask=mask.bool()))
    assert torch.equal(from_logits.keep, from_stats.keep)
    assert from_logits.stats["clip_fraction"] > 0


def test_a_control_without_its_inputs_says_what_it_needs() -> None:
    with pytest.raises(UsageError, match="clipv needs per-token statistics"):
        CONTROLS.load("clipv")(stats=None, advantages=torch.ones(1), mask=torch.ones(1, 2),
                               config=EntropyControlConfig())
