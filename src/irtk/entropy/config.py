"""Settings of entropy control (trainers) and of ``irtk entropy-audit``; the control registry.

Light on purpose (no torch at import): the trainers' configs compose ``EntropyControlConfig``
and the CLI reads help and defaults from these dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from irtk.config import require, setting
from irtk.models import DEFAULT_LM
from irtk.registry import Registry

# Each control is a function with the keyword signature documented in irtk.entropy.control.
CONTROLS = Registry("entropy control", "--entropy-control", {
    "none": "irtk.entropy.control:no_control",
    "clipb": "irtk.entropy.control:clip_b",
    "clipv": "irtk.entropy.control:clip_v",
    "clip-cov": "irtk.entropy.control:clip_cov",
    "kl-cov": "irtk.entropy.control:kl_cov",
    "top-entropy": "irtk.entropy.control:top_entropy",
    "bonus": "irtk.entropy.control:entropy_bonus",
})

# Rules TRL's GRPOTrainer has itself (arXiv 2506.01939's 80/20 rule; the entropy bonus), by the
# field both EntropyControlConfig and TRL's GRPOConfig name their parameter with: irtk's GRPO trainer
# sets TRL's field from the control's parameter and leaves the rule to TRL (its hook only logs the
# rule's clip fraction). The functions in irtk.entropy.control serve the audit and other trainers.
TRL_NATIVE = {"top-entropy": "top_entropy_quantile", "bonus": "entropy_coef"}

# Below this, the batch statistic is degenerate and Clip_B / Clip_V clip nothing (authors' code).
STD_FLOOR = 1e-12


@dataclass
class EntropyControlConfig:
    """Which entropy control a GRPO trainer applies per token, with the papers' defaults."""

    entropy_control: str = setting("none", "Entropy control: none, clipb, clipv, clip-cov, kl-cov, "
                                   "top-entropy, bonus, or module:attr.")
    clipb_mu: float = setting(2.5, "Clip_B: drop a negative-advantage token when S_k - mean(S) < "
                              "-mu * std(S) over the batch's tokens (paper default 2.5).")
    clipv_mu: float = setting(8.5, "Clip_V: drop a negative-advantage token when D_k > mu * std(D) "
                              "over the batch's tokens (authors' example config 8.5).")
    clipv_max_frac: float = setting(1e-4, "Clip_V: drop at most this fraction of the batch's tokens "
                                    "(at least one), keeping the largest D clipped (default 1e-4).")
    cov_ratio: float = setting(2e-4, "Clip-Cov / KL-Cov: fraction r of tokens acted on (Cui et al. "
                               "default 2e-4).")
    clip_cov_lb: float = setting(1.0, "Clip-Cov: lower bound of the covariance band (default 1).")
    clip_cov_ub: float = setting(5.0, "Clip-Cov: upper bound of the covariance band (default 5).")
    kl_cov_coef: float = setting(1.0, "KL-Cov: beta, weight of |log pi - log pi_old| on the top-r "
                                 "covariance tokens (default 1).")
    top_entropy_quantile: float = setting(0.2, "top-entropy: keep only this top quantile of tokens by "
                                          "entropy in the loss (80/20 rule default 0.2; TRL's "
                                          "top_entropy_quantile).")
    entropy_coef: float = setting(1e-3, "bonus: coefficient of the entropy bonus, loss -= coef * mean H "
                                  "(TRL's entropy_coef; 1e-3 as verl's long-standing default).")

    def __post_init__(self) -> None:
        CONTROLS.spec(self.entropy_control)  # a usage error listing the names when unknown
        require(self.clipb_mu > 0, f"--clipb-mu must be > 0, got {self.clipb_mu}")
        require(self.clipv_mu > 0, f"--clipv-mu must be > 0, got {self.clipv_mu}")
        require(0 <= self.clipv_max_frac <= 1, f"--clipv-max-frac must be in [0, 1], got {self.clipv_max_frac}")
        require(0 < self.cov_ratio <= 1, f"--cov-ratio must be in (0, 1], got {self.cov_ratio}")
        require(self.clip_cov_lb < self.clip_cov_ub,
                f"--clip-cov-lb ({self.clip_cov_lb}) must be below --clip-cov-ub ({self.clip_cov_ub})")
        require(self.kl_cov_coef >= 0, f"--kl-cov-coef must be >= 0, got {self.kl_cov_coef}")
        require(0 < self.top_entropy_quantile <= 1,
                f"--top-entropy-quantile must be in (0, 1], got {self.top_entropy_quantile}")
        require(self.entropy_coef >= 0, f"--entropy-coef must be >= 0, got {self.entropy_coef}")

    def recorded(self) -> dict:
        return asdict(self)


TEMPLATES = ("auto", "chat", "raw")


@dataclass
class AuditConfig:
    """One ``irtk entropy-audit`` run (recorded in the output's provenance)."""

    model: str = setting(DEFAULT_LM, "Model: a registry name (irtk models), a checkpoint folder or a hub id.")
    dtype: str = setting("auto", "Model weights: auto (bf16 where native, else fp32), float32, bfloat16 "
                         "or float16. --verify-step always runs in float32.")
    device: str | None = setting(None, "Device (default: cuda, else mps, else cpu).")
    template: str = setting("auto", "How prompts become tokens: chat (the tokenizer's chat template; "
                            "the completion is the assistant turn, ending with EOS), raw (prompt text "
                            "then completion text, no special tokens), or auto (chat when the tokenizer "
                            "has a template).")
    temperature: float = setting(1.0, "Sampling temperature the completions were drawn at (logits are "
                                 "divided by it).")
    prompt_field: str = setting("prompt", "Column holding the prompt (text or chat messages).")
    completion_field: str = setting("completion", "Column holding the completion (text or an assistant message).")
    group_by: tuple[str, ...] = setting(help="Columns whose values form a GRPO group: with rewards, "
                                        "advantages are (r - group mean) / (group std + 1e-6).", factory=tuple)
    batch_size: int = setting(8, "Samples per forward pass.")
    max_tokens_per_batch: int = setting(8192, "Token budget of one forward pass (long samples go alone).")
    tile_size: int = setting(8192, "Vocabulary tile of the streaming entropy pass.")
    per_token: bool = setting(False, "Write one row per scored token instead of one per sample.")
    limit: int | None = setting(None, "Audit at most N samples.")
    verify_step: float | None = setting(None, "Take one SGD policy-gradient step at this learning rate on "
                                        "the samples and measure each token's entropy change against "
                                        "the prediction dH = lr * A * D.")
    control: EntropyControlConfig = setting(help="Rule parameters for the clip fractions in the summary.",
                                            factory=EntropyControlConfig)
    seed: int = setting(0, "Random seed (Clip-Cov's random choice).")

    def __post_init__(self) -> None:
        require(self.template in TEMPLATES, f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        require(self.temperature > 0, f"--temperature must be > 0, got {self.temperature}")
        require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        require(self.max_tokens_per_batch >= 1, "--max-tokens-per-batch must be at least 1")
        require(self.tile_size >= 1, f"--tile-size must be at least 1, got {self.tile_size}")
        require(self.limit is None or self.limit >= 0, f"--limit must be >= 0, got {self.limit}")
        require(self.verify_step is None or self.verify_step > 0,
                f"--verify-step must be a positive learning rate, got {self.verify_step}")

    def recorded(self) -> dict:
        return asdict(self)
