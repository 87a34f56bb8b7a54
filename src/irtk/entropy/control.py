"""Entropy control for a GRPO trainer's per-token loss: Clip_B, Clip_V (arXiv 2602.03392),
Clip-Cov, KL-Cov (arXiv 2505.22617), top-entropy (80/20, arXiv 2506.01939) and an entropy bonus.

Calling convention (every control in ``CONTROLS``, and any ``module:attr`` given instead, takes
these keyword arguments and returns a ``ControlResult``)::

    result = control(
        stats=TokenStats | None,     # irtk.entropy.math statistics of the completion tokens [B, T]
                                     #   (needed by clipb: .s; clipv: .d; top-entropy: .entropy)
        advantages=Tensor,           # [B] or [B, T]; broadcast over the tokens
        mask=Tensor,                 # [B, T] completion mask (1 = a real completion token)
        logps=Tensor | None,         # [B, T] log pi(token) under the current policy, with grad
                                     #   (clip-cov: for the covariance; kl-cov: the penalty's grad)
        old_logps=Tensor | None,     # [B, T] log pi_old(token) (kl-cov; clip-cov with ratio_clip)
        entropies=Tensor | None,     # [B, T] per-token entropy with grad (bonus), else stats.entropy
        ratio_clip=(eps_low, eps_high) | None,  # clip-cov: skip tokens PPO's ratio clip already zeroes
        config=EntropyControlConfig, # the rule's parameters
        generator=torch.Generator | None,       # clip-cov's random choice
    )
    keep = result.keep            # bool [B, T]: tokens that stay in the loss AND in the token-mean
                                  #   denominator (mask & not clipped) — use it as the new mask
    per_token_loss = per_token_loss * result.weight     if result.weight is not None
                                  #   (0 = detached from the gradient, still counted: Clip-Cov)
    per_token_loss = per_token_loss + result.extra_loss if result.extra_loss is not None
                                  #   (KL-Cov's beta |log pi - log pi_old|; the bonus's -coef H)
    result.stats                  # floats for logging; always has "clip_fraction"

``apply_control(config, logits=..., targets=..., ...)`` computes the statistics from the
completion logits first (streaming, no_grad) when ``stats`` is not given. Batch statistics (mean
and std of S or D, covariances, quantiles) are over the tensors passed in: one process's batch.

Clip_B and Clip_V follow the authors' code (Trinity-RFT ``clipb_advantage.py`` /
``clipv_advantage.py``): population mean/std over the valid tokens, nothing clipped when the std
is below 1e-12, and only negative-advantage tokens are dropped (Clip_V's code also lets
zero-advantage tokens through its D test; they carry no gradient, so here they are left alone as
the paper describes). Clip-Cov and KL-Cov follow Cui et al.'s verl code.

irtk's GRPO trainer leaves ``top-entropy`` and ``bonus`` to TRL's own ``top_entropy_quantile`` and
``entropy_coef`` (``TRL_NATIVE``); ``top_entropy`` and ``entropy_bonus`` here serve the audit's
summary and trainers without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from irtk.entropy.config import CONTROLS, STD_FLOOR, EntropyControlConfig
from irtk.entropy.math import TokenStats, token_stats
from irtk.errors import UsageError

__all__ = ["CONTROLS", "ControlResult", "apply_control", "clip_b", "clip_cov", "clip_v",
           "entropy_bonus", "kl_cov", "no_control", "top_entropy"]


@dataclass
class ControlResult:
    """What a control does to the per-token loss; see the module docstring for how to apply it."""

    keep: torch.Tensor
    weight: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


def _per_token(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    adv = advantages.to(mask.device).float()
    if adv.dim() == mask.dim() - 1:
        adv = adv.unsqueeze(-1)
    return adv.expand(mask.shape)


def _need(value: Any, what: str, name: str) -> Any:
    if value is None:
        raise UsageError(f"entropy control {name} needs {what}")
    return value


def _fraction(part: torch.Tensor, whole: torch.Tensor) -> float:
    n = int(whole.sum().item())
    return float(part.sum().item()) / n if n else 0.0


def _masked_moments(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Population mean and std over the valid entries (the authors' statistics)."""
    values = x[valid].float()
    if values.numel() == 0:
        zero = torch.zeros((), device=x.device)
        return zero, zero
    mean = values.mean()
    return mean, ((values - mean) ** 2).mean().sqrt()


def _clip_stats(clipped: torch.Tensor, valid: torch.Tensor, adv: torch.Tensor) -> dict[str, float]:
    return {"clip_fraction": _fraction(clipped, valid),
            "clip_fraction_neg": _fraction(clipped, valid & (adv < 0))}


def no_control(*, mask: torch.Tensor, **_: Any) -> ControlResult:
    """Vanilla GRPO: every completion token counts."""
    return ControlResult(keep=mask.bool(), stats={"clip_fraction": 0.0})


def clip_b(*, stats: TokenStats | None, advantages: torch.Tensor, mask: torch.Tensor,
           config: EntropyControlConfig, **_: Any) -> ControlResult:
    """Clip_B: drop a negative-advantage token when S_k - mean(S) < -mu * std(S)."""
    s = _need(stats, "per-token statistics (stats.s)", "clipb").s.to(mask.device)
    valid = mask.bool()
    adv = _per_token(advantages, mask)
    mean, std = _masked_moments(s, valid)
    if std.item() < STD_FLOOR:
        clipped = torch.zeros_like(valid)
    else:
        clipped = valid & (adv < 0) & (s - mean < -config.clipb_mu * std)
    out = _clip_stats(clipped, valid, adv)
    out.update(mean_s=float(mean.item()), var_s=float((std * std).item()))
    return ControlResult(keep=valid & ~clipped, stats=out)


def clip_v(*, stats: TokenStats | None, advantages: torch.Tensor, mask: torch.Tensor,
           config: EntropyControlConfig, **_: Any) -> ControlResult:
    """Clip_V: drop a negative-advantage token when D_k > mu * std(D) (D not centred), at most
    ``clipv_max_frac`` of the tokens (at least one), keeping those with the largest D."""
    d = _need(stats, "per-token statistics (stats.d)", "clipv").d.to(mask.device)
    valid = mask.bool()
    adv = _per_token(advantages, mask)
    _, std = _masked_moments(d, valid)
    if std.item() < STD_FLOOR:
        clipped = torch.zeros_like(valid)
        candidates = 0
    else:
        flagged = valid & (adv < 0) & (d > config.clipv_mu * std)
        candidates = int(flagged.sum().item())
        cap = max(int(config.clipv_max_frac * int(valid.sum().item())), 1)
        if candidates <= cap:
            clipped = flagged
        else:
            flat = flagged.reshape(-1)
            idx = flat.nonzero().squeeze(-1)
            # Largest D first; a stable sort keeps ties in token order (deterministic).
            order = torch.sort(d.reshape(-1)[idx], descending=True, stable=True).indices
            clipped_flat = torch.zeros_like(flat)
            clipped_flat[idx[order[:cap]]] = True
            clipped = clipped_flat.reshape(valid.shape)
    out = _clip_stats(clipped, valid, adv)
    out.update(std_d=float(std.item()),
               flagged_fraction=candidates / max(int(valid.sum().item()), 1))
    return ControlResult(keep=valid & ~clipped, stats=out)


def _covariance(logps: torch.Tensor, adv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-token (A - mean A)(log pi - mean log pi) over the valid tokens (Cui et al.)."""
    lp = logps.detach().float()
    mean_a = adv[valid].mean() if valid.any() else adv.new_zeros(())
    mean_lp = lp[valid].mean() if valid.any() else lp.new_zeros(())
    return (adv - mean_a) * (lp - mean_lp)


def clip_cov(*, advantages: torch.Tensor, mask: torch.Tensor, logps: torch.Tensor | None,
             config: EntropyControlConfig, old_logps: torch.Tensor | None = None,
             ratio_clip: tuple[float, float] | None = None, generator: torch.Generator | None = None,
             **_: Any) -> ControlResult:
    """Clip-Cov: detach a random ``cov_ratio`` of the tokens (at least one) whose covariance lies
    in (lb, ub) from the gradient; they stay in the token-mean denominator (weight 0)."""
    logps = _need(logps, "per-token log-probs (logps)", "clip-cov")
    valid = mask.bool()
    adv = _per_token(advantages, mask)
    cov = _covariance(logps, adv, valid)
    band = valid & (cov > config.clip_cov_lb) & (cov < config.clip_cov_ub)
    if ratio_clip is not None and old_logps is not None:
        # Tokens PPO's ratio clip already cuts from the gradient are not counted twice.
        ratio = (logps.detach() - old_logps.detach()).float().exp()
        clipped_ratio = ratio.clamp(1 - ratio_clip[0], 1 + ratio_clip[1])
        band = band & ~(-adv * clipped_ratio > -adv * ratio)
    n_valid = int(valid.sum().item())
    k = max(int(config.cov_ratio * n_valid), 1)
    idx = band.reshape(-1).nonzero().squeeze(-1)
    perm = torch.randperm(idx.numel(), generator=generator, device=generator.device if generator else "cpu")
    chosen = idx[perm[:k].to(idx.device)]
    weight = torch.ones(valid.numel(), dtype=torch.float32, device=valid.device)
    weight[chosen] = 0.0
    weight = weight.reshape(valid.shape)
    detached = weight == 0
    stats = {"clip_fraction": _fraction(detached, valid), "cov_band_fraction": _fraction(band, valid)}
    return ControlResult(keep=valid, weight=weight, stats=stats)


def kl_cov(*, advantages: torch.Tensor, mask: torch.Tensor, logps: torch.Tensor | None,
           config: EntropyControlConfig, old_logps: torch.Tensor | None = None, **_: Any) -> ControlResult:
    """KL-Cov: add beta * |log pi - log pi_old| on the top ``cov_ratio`` of the tokens (at least
    one) by covariance. On-policy (log pi = log pi_old) the term is zero and so is its gradient."""
    logps = _need(logps, "per-token log-probs with grad (logps)", "kl-cov")
    old = logps.detach() if old_logps is None else old_logps.detach()
    valid = mask.bool()
    adv = _per_token(advantages, mask)
    cov = _covariance(logps, adv, valid).masked_fill(~valid, float("-inf"))
    n_valid = int(valid.sum().item())
    penalised = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    if n_valid:
        k = min(max(int(config.cov_ratio * n_valid), 1), n_valid)
        order = torch.sort(cov.reshape(-1), descending=True, stable=True).indices
        penalised[order[:k]] = True
    penalised = penalised.reshape(valid.shape)
    abs_kl = (logps - old).abs()
    extra = config.kl_cov_coef * abs_kl * penalised
    stats = {"clip_fraction": _fraction(penalised, valid),
             "abs_kl": float(abs_kl.detach()[valid].mean().item()) if n_valid else 0.0}
    return ControlResult(keep=valid, extra_loss=extra, stats=stats)


def top_entropy(*, mask: torch.Tensor, config: EntropyControlConfig, stats: TokenStats | None = None,
                entropies: torch.Tensor | None = None, **_: Any) -> ControlResult:
    """80/20: only tokens whose entropy reaches the batch's (1 - q) quantile stay in the loss
    (TRL's ``get_high_entropy_mask`` rule, on this process's tokens)."""
    if entropies is None:
        entropies = _need(stats, "per-token entropies", "top-entropy").entropy
    h = entropies.detach().float().to(mask.device)
    valid = mask.bool()
    if not valid.any():
        return ControlResult(keep=valid, stats={"clip_fraction": 0.0, "entropy_threshold": 0.0})
    threshold = torch.quantile(h[valid], 1.0 - config.top_entropy_quantile)
    keep = valid & (h >= threshold)
    return ControlResult(keep=keep, stats={"clip_fraction": _fraction(valid & ~keep, valid),
                                           "entropy_threshold": float(threshold.item())})


def entropy_bonus(*, mask: torch.Tensor, config: EntropyControlConfig, stats: TokenStats | None = None,
                  entropies: torch.Tensor | None = None, **_: Any) -> ControlResult:
    """Entropy bonus: a per-token term -coef * H (pass ``entropies`` with grad to train on it)."""
    if entropies is None:
        entropies = _need(stats, "per-token entropies", "bonus").entropy
    valid = mask.bool()
    h = entropies.to(mask.device)
    mean_h = float(h.detach()[valid].float().mean().item()) if valid.any() else 0.0
    return ControlResult(keep=valid, extra_loss=-config.entropy_coef * h * valid,
                         stats={"clip_fraction": 0.0, "mean_entropy": mean_h})


def apply_control(config: EntropyControlConfig, *, advantages: torch.Tensor, mask: torch.Tensor,
                  stats: TokenStats | None = None, logits: torch.Tensor | None = None,
                  targets: torch.Tensor | None = None, temperature: float = 1.0,
                  **tensors: Any) -> ControlResult:
    """Run ``config.entropy_control``. Without ``stats``, computes them from the completion
    ``logits`` [B, T, V] (aligned with ``targets`` [B, T], already divided by the temperature
    unless ``temperature`` is given) with the streaming pass, under no_grad."""
    if stats is None and logits is not None:
        if targets is None:
            raise UsageError("apply_control: logits need the completion token ids (targets)")
        stats = token_stats(logits.detach(), targets, mask=mask.bool(), temperature=temperature)
    control = CONTROLS.load(config.entropy_control)
    return control(stats=stats, advantages=advantages, mask=mask, config=config, **tensors)
