"""``SimulateConfig``: every setting of a simulation run, with its help text and validation.

The CLI reads defaults and help from here (irtk.config's convention); the trainers and
``irtk research`` build the same config to run ``simulate``'s loop. Light on purpose: nothing
here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from irtk.config import require, setting
from irtk.dialogue.gate import GATE_MODES, Thresholds
from irtk.dialogue.policies import POLICIES
from irtk.dialogue.rewards import BETA, GAMMA
from irtk.dialogue.summary import SUMMARIES
from irtk.dialogue.user import USERS
from irtk.generation import SamplingParams
from irtk.models import DEFAULT_EMBEDDER, DEFAULT_LM


@dataclass
class SimulateConfig:
    """Everything one simulation run depends on (recorded in the output's provenance)."""

    policy: str = setting("model", "Clarifier: model, oracle (the trajectory's own questions), "
                          "random (random graph questions), none, or module:attr.")
    backend: str = setting("auto", "Generation backend: auto (vllm where it is installed, else hf), "
                           "hf, vllm, openai, or module:attr.")
    model: str = setting(DEFAULT_LM, "Model: a registry name (irtk models), a local path or a hub id.")
    base_url: str | None = setting(None, "OpenAI-compatible server for --backend openai.")
    dtype: str = setting("auto", "Model weights for --backend hf/vllm: auto, float32, bfloat16 or float16.")
    backend_args: dict = setting(help="More keyword arguments of the backend's constructor "
                                 "(--backend-arg KEY=VALUE: vllm's enforce_eager, max_model_len, ...).",
                                 factory=dict)
    user: str = setting("template", "Simulated user's answers: template (deterministic, from the "
                        "matched intent), llm, or module:attr.")
    user_model: str | None = setting(None, "Model for --user llm (default: --model; one backend serves both).")
    summary: str = setting("llm", "Summary agent: llm, template, or module:attr.")
    summary_model: str | None = setting(None, "Model for --summary llm (default: --model).")
    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder of the gate and the rewards: a "
                            "registry name, path or hub id.")
    gate: str = setting("path", "Simulated user's relevance test: path (a user who knows its path "
                        "through the C-DAG: graph questions are answered on its path, irrelevant off "
                        "it; other questions fall back to the intents; beyond the paper) or "
                        "embedding (the paper's: best cosine to the intents only).")
    thresholds: str | None = setting(None, "Gate thresholds JSON written by 'irtk calibrate' "
                                     "(default: the ones shipped for --embedder).")
    tau_rep: float | None = setting(None, "Override: redundant (and a graph-node match) above this "
                                    "cosine to an earlier question.")
    tau_rel: float | None = setting(None, "Override: irrelevant below this best cosine to the intents.")
    tau_req: float | None = setting(None, "Override: restates the request above this cosine to it.")
    beta: float = setting(BETA, "Weight of the content reward (IntentRL's beta).")
    gamma: float = setting(GAMMA, "Weight of each penalty (IntentRL's gamma).")
    max_turns: int = setting(9, "Questions per dialogue at most.")
    allow_stop: bool = setting(False, "Let the model policy answer STOP when it knows enough.")
    temperature: float = setting(0.7, "Sampling temperature (0: greedy).")
    top_p: float = setting(0.95, "Nucleus sampling mass.")
    max_tokens: int = setting(96, "Tokens per agent turn.")
    user_max_tokens: int = setting(64, "Tokens per simulated-user answer (--user llm).")
    summary_max_tokens: int = setting(160, "Tokens of the summary query (--summary llm).")
    seed: int = setting(0, "Random seed.")
    batch_size: int | None = setting(None, "The backend's batch (hf: rows per forward; default 64 on a CPU). "
                                     "As many dialogues play at once as the backend asks (hf: its batch "
                                     "and 1/8 more where turns are streamed, else twice its batch).")
    limit: int | None = setting(None, "Simulate at most N dialogues.")
    skip_ids: frozenset[str] = setting(help="Dialogue ids already done (resume bookkeeping; not recorded).",
                                       factory=frozenset)
    bootstrap: int = setting(1000, "Bootstrap resamples for the metrics' 95% intervals.")

    def __post_init__(self) -> None:
        for registry, value in ((POLICIES, self.policy), (USERS, self.user), (SUMMARIES, self.summary)):
            registry.spec(value)  # a usage error listing the names when unknown
        require(self.max_turns >= 1, f"--max-turns must be at least 1, got {self.max_turns}")
        require(self.limit is None or self.limit >= 0, f"--limit must be >= 0, got {self.limit}")
        require(self.batch_size is None or self.batch_size >= 1,
                f"--batch-size must be at least 1, got {self.batch_size}")
        require(self.gate in GATE_MODES, f"--gate must be one of {', '.join(GATE_MODES)}, got {self.gate!r}")
        for name, tau in (("--tau-rep", self.tau_rep), ("--tau-rel", self.tau_rel), ("--tau-req", self.tau_req)):
            require(tau is None or -1.0 <= tau <= 1.0, f"{name} is a cosine similarity in [-1, 1], got {tau}")
        if self.backend_args:  # a misspelt engine option fails now, not after the embedder loads
            from irtk.generation import check_backend_options

            check_backend_options(self.backend, self.backend_args)
        self.gate_thresholds()  # an embedder without thresholds, or a bad file, fails before any work

    def gate_thresholds(self) -> Thresholds:
        """The thresholds in force: --thresholds, else the embedder's shipped ones, then --tau-*."""
        base = Thresholds.load(self.thresholds) if self.thresholds else None
        overrides = {k: v for k, v in (("tau_rep", self.tau_rep), ("tau_rel", self.tau_rel),
                                       ("tau_req", self.tau_req)) if v is not None}
        if base is None and len(overrides) < 3:
            base = Thresholds.for_embedder(self.embedder)
        if base is None:
            return Thresholds(**overrides, source="--tau-rel/--tau-rep/--tau-req")
        return replace(base, **overrides) if overrides else base

    def sampling(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed)

    def recorded(self) -> dict:
        """The config as provenance: every setting, without the resume bookkeeping."""
        out = asdict(self)
        out.pop("skip_ids")
        t = self.gate_thresholds()
        out["gate_thresholds"] = {"tau_rel": t.tau_rel, "tau_rep": t.tau_rep, "tau_req": t.tau_req,
                                  "embedder": t.embedder, "source": t.source}
        return out
