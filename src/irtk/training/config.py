"""Settings of ``irtk train-offline`` / ``irtk train-online``: irtk's own fields, in a light mixin.

``TrainSettings`` holds what TRL does not know (the reward preset and its weights, the user
simulator's thresholds, LoRA, the seed split, Stage II's rollouts, entropy control). It imports
no torch, so ``irtk --help`` stays fast. At run time ``irtk.training.trainer.config_class``
composes it with TRL's ``GRPOConfig`` (or ``SFTConfig`` for ``--method sft``) into one typed
dataclass, so every TRL field (learning rate, batch, epochs, ``num_generations``,
``max_completion_length``, vLLM, logging) is set the way TRL users expect and irtk's fields ride
along, validated in ``__post_init__``.

Names that would collide with TRL: the paper's beta (content weight) is ``content_weight``
(TRL's ``beta`` is the KL coefficient, ``--kl-beta``); gamma is ``penalty_weight``. TRL 1.16 has
no ``max_prompt_length``: prompts longer than ours lose their oldest exchanges before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from irtk.config import require, setting
from irtk.dialogue.gate import DEFAULT_TAU_REL, DEFAULT_TAU_REP
from irtk.dialogue.rewards import CONTENT_MODES
from irtk.entropy.config import CONTROLS, TRL_NATIVE, EntropyControlConfig
from irtk.models import DEFAULT_EMBEDDER, DEFAULT_LM

METHODS = ("grpo", "sft")
STAGES = ("offline", "online")

# The paper's values (IntentRL, "Training"); examples/configs/intentrl-paper.toml sets them.
PAPER = {"learning_rate": 1e-6, "per_device_train_batch_size": 8, "num_train_epochs": 4,
         "num_generations": 8, "max_prompt_length": 4096, "max_completion_length": 1024,
         "content_weight": 2.0, "penalty_weight": 2.0}

# TRL's GRPOConfig values that leave its own entropy rules off.
TRL_OFF = {"top_entropy_quantile": 1.0, "entropy_coef": 0.0}


@dataclass
class TrainSettings:
    """irtk's fields of a training run (the TRL fields come from GRPOConfig / SFTConfig)."""

    stage: str = setting("offline", "offline (Stage I: expert turns) or online (Stage II: rollouts "
                         "mixed with Stage I turns).")
    model: str = setting(DEFAULT_LM, "Model to train: a registry name, a checkpoint folder or a hub id.")
    method: str = setting("grpo", "grpo (TRL GRPOTrainer on the reward) or sft (TRL SFTTrainer on "
                          "the expert questions: the paper's SFT ablation).")
    reward: str = setting("", "Reward preset (stage1: beta*content + format; stage2: penalties on "
                          "rollout samples) or module:attr; default: stage1 offline, stage2 online.")
    content_weight: float = setting(2.0, "IntentRL's beta: weight of the content reward.")
    content: str = setting("cosine", "How the content reward is scored: cosine (max cosine to the turn's "
                           "target intents, the paper's) or answered (that cosine only when the simulated "
                           "user answers the question with an intent it has not stated yet; beyond the paper).")
    penalty_weight: float = setting(2.0, "IntentRL's gamma: weight of each penalty (Stage II).")
    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder of the rewards and the simulated user.")
    tau_rep: float = setting(DEFAULT_TAU_REP, "Redundant when the cosine to an earlier question exceeds this.")
    tau_rel: float = setting(DEFAULT_TAU_REL, "Irrelevant when the best cosine to the intents is below this.")
    allow_stop: bool = setting(False, "Let the policy answer STOP when it knows enough; adds a sample "
                               "at the end of each expert dialogue and the preset's stop reward.")
    max_prompt_length: int = setting(1024, "Prompt tokens at most; longer prompts drop their oldest "
                                     "exchanges (the request and instructions stay).")
    max_samples: int | None = setting(None, "Use at most N turn samples (a seeded subset; CPU sizing).")
    lora_r: int = setting(0, "LoRA rank (peft); 0 trains all weights. The saved checkpoint has the "
                          "adapters merged, so it loads like any model.")
    lora_alpha: int = setting(32, "LoRA alpha.")
    lora_dropout: float = setting(0.05, "LoRA dropout.")
    model_dtype: str = setting("auto", "Weights: auto (bf16 where the device runs it natively, else "
                               "fp32), float32 or bfloat16.")
    eval_file: str | None = setting(None, "Held-out trajectories for evaluation through simulate; "
                                    "their seeds must not occur in the training data.")
    holdout: float = setting(0.0, "Hold out this fraction of the training file's seeds for "
                             "evaluation instead of --eval (a seeded split by seed, never by dialogue).")
    eval_every: int = setting(0, "Evaluate on the held-out trajectories every N steps (0: only at the end).")
    eval_limit: int | None = setting(None, "Held-out dialogues per evaluation at most (0: check and "
                                     "record the split, simulate nothing).")
    eval_max_turns: int = setting(3, "Questions per held-out dialogue.")
    eval_dialogues_batch: int = setting(16, "Held-out dialogues advancing together.")
    entropy: EntropyControlConfig = setting(help="Per-token entropy control (irtk.entropy.control).",
                                            factory=EntropyControlConfig)
    # Stage II
    rollout_model: str | None = setting(None, "Stage II: policy that plays the rollouts (the Stage I "
                                        "checkpoint); default: the model being trained.")
    init: str | None = setting(None, "Stage II: continue from this checkpoint (it is trained and "
                               "plays the rollouts) instead of a fresh run from --model.")
    rounds: int = setting(1, "Stage II: alternate rollouts and training this many times (later "
                          "rounds roll out the policy being trained).")
    rollouts_per_trajectory: int = setting(1, "Stage II: rollouts per training trajectory per round.")
    rollout_limit: int | None = setting(None, "Stage II: roll out at most N training trajectories per "
                                        "round (a seeded subset; CPU sizing).")
    rollout_turns: int = setting(2, "Stage II: questions the policy asks after the expert prefix.")
    prefix_min: int = setting(0, "Stage II: shortest expert prefix (turns of teacher forcing).")
    prefix_max: int | None = setting(None, "Stage II: longest expert prefix (default: the trajectory's "
                                     "length minus one).")
    rollout_temperature: float = setting(0.7, "Stage II: sampling temperature of the rollouts.")
    rollout_max_tokens: int = setting(64, "Stage II: tokens per rollout question.")
    rollout_batch_size: int = setting(16, "Stage II: dialogues advancing together in a rollout.")
    keep_checkpoints: bool = setting(False, "Keep the intermediate trainer checkpoints after a "
                                     "successful run (they are needed only to --resume).")

    def validate_settings(self) -> None:
        """The checks of irtk's fields (called from the composed config's ``__post_init__``)."""
        require(self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        require(self.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.reward:
            self.reward = "stage1" if self.stage == "offline" else "stage2"
        if ":" not in self.reward:
            from irtk.dialogue.rewards import REWARD_PRESETS

            REWARD_PRESETS.spec(self.reward)  # a usage error listing the names when unknown
        require(self.content_weight >= 0, f"--content-weight must be >= 0, got {self.content_weight}")
        require(self.content in CONTENT_MODES,
                f"--content must be one of {', '.join(CONTENT_MODES)}, got {self.content!r}")
        require(self.penalty_weight >= 0, f"--penalty-weight must be >= 0, got {self.penalty_weight}")
        for name, tau in (("--tau-rep", self.tau_rep), ("--tau-rel", self.tau_rel)):
            require(-1.0 <= tau <= 1.0, f"{name} is a cosine similarity in [-1, 1], got {tau}")
        require(self.max_prompt_length >= 16, f"--max-prompt-length must be >= 16, got {self.max_prompt_length}")
        require(self.max_samples is None or self.max_samples >= 1, "--max-samples must be >= 1")
        require(self.lora_r >= 0, f"--lora-r must be >= 0, got {self.lora_r}")
        require(0.0 <= self.holdout < 1.0, f"--holdout is a fraction of seeds in [0, 1), got {self.holdout}")
        require(not (self.holdout and self.eval_file), "--holdout and --eval both choose the held-out "
                "seeds: give one")
        require(self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}")
        require(self.eval_max_turns >= 1, f"--eval-max-turns must be >= 1, got {self.eval_max_turns}")
        require(self.eval_dialogues_batch >= 1, "--eval-batch-size must be >= 1")
        require(self.model_dtype in ("auto", "float32", "bfloat16", "float16"),
                f"--dtype must be auto, float32, bfloat16 or float16, got {self.model_dtype!r}")
        CONTROLS.spec(self.entropy.entropy_control)
        self._trl_native_control()
        require(self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}")
        require(self.rollouts_per_trajectory >= 1, "--rollouts-per-trajectory must be >= 1")
        require(self.rollout_limit is None or self.rollout_limit >= 1, "--rollout-limit must be >= 1")
        require(self.eval_limit is None or self.eval_limit >= 0, "--eval-limit must be >= 0")
        require(self.rollout_turns >= 1, f"--rollout-turns must be >= 1, got {self.rollout_turns}")
        require(self.prefix_min >= 0, f"--prefix-min must be >= 0, got {self.prefix_min}")
        require(self.prefix_max is None or self.prefix_max >= self.prefix_min,
                f"--prefix-max ({self.prefix_max}) must be >= --prefix-min ({self.prefix_min})")
        require(self.method == "grpo" or self.stage == "offline",
                "--method sft is Stage I's supervised ablation (train-offline only)")
        require(self.method == "grpo" or self.entropy.entropy_control == "none",
                "--entropy-control acts on GRPO's per-token loss; --method sft has none")

    def _trl_native_control(self) -> None:
        """``--entropy-control top-entropy|bonus`` is TRL's own rule: set TRL's field (same name as
        the control's parameter) on the composed GRPO config; a different value given to TRL's
        own option (not its off value) is a usage error."""
        field = TRL_NATIVE.get(self.entropy.entropy_control)
        if field is None or not hasattr(self, field):  # not a TRL rule, or not a GRPO config
            return
        value, given = getattr(self.entropy, field), getattr(self, field)
        require(given in (TRL_OFF[field], value),
                f"--entropy-control {self.entropy.entropy_control} sets TRL's {field} to {value} "
                f"(--entropy-param {field}=...), but it is also given as {given}: give it once")
        setattr(self, field, value)

    def settings(self) -> dict:
        """irtk's fields as provenance (JSON-ready)."""
        return {f.name: (asdict(getattr(self, f.name)) if f.name == "entropy" else getattr(self, f.name))
                for f in fields(TrainSettings)}

# TRL fields the CLI sets, with CPU-sized defaults for the embedded SmolLM2-135M (the paper's
# values are in PAPER and examples/configs/intentrl-paper.toml).
CPU_DEFAULTS = {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                "num_train_epochs": 1.0, "num_generations": 4, "max_completion_length": 64,
                "temperature": 1.0, "beta": 0.0, "loss_type": "dapo", "save_steps": 50}
