"""``ResearchConfig``: every setting of an ``irtk research`` run, with its help text and validation.

The CLI reads defaults and help from here (irtk.config's convention). The dialogue settings
(clarifier sampling, simulated user, summary agent, gate thresholds) take their defaults from
``SimulateConfig``, so the research agent clarifies exactly as ``irtk simulate`` does. Light on
purpose: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from irtk.config import default_of, require, setting
from irtk.dialogue.config import SimulateConfig
from irtk.generation import SamplingParams
from irtk.models import DEFAULT_EMBEDDER, DEFAULT_LM

CLARIFY_MODES = ("interactive", "simulate", "auto", "none")
WRITERS = ("llm", "extractive")


def _sim(name: str) -> object:
    return default_of(SimulateConfig, name)


@dataclass
class ResearchConfig:
    """Everything one research run depends on (recorded in the output's provenance)."""

    index: str = setting("", "Index folder from `irtk index` (any irtk encoder).")
    docs: str | None = setting(None, "Documents the index was built from (for the evidence text); "
                               "default: the source recorded in the index's provenance.json.")
    clarify: str = setting("auto", "interactive (ask at the terminal; auto when stdin is not one), "
                           "simulate (the simulated user answers from the request's intents), "
                           "auto (no questions: state assumptions), or none.")
    backend: str = setting("auto", "Generation backend: auto (vllm where it is installed, else hf), "
                           "hf, vllm, openai, or module:attr.")
    model: str = setting(DEFAULT_LM, "Model of the summary agent, the assumptions and the LLM writer.")
    clarifier_model: str | None = setting(None, "Clarifier model: a registry name, path, hub id or a "
                                          "checkpoint folder from train-offline/train-online (default: --model).")
    base_url: str | None = setting(None, "OpenAI-compatible server for --backend openai.")
    dtype: str = setting("auto", "Model weights for --backend hf/vllm: auto, float32, bfloat16 or float16.")
    max_turns: int = setting(5, "Clarification questions at most (the IntentRL paper's best was 9).")
    allow_stop: bool = setting(False, "Let the clarifier answer STOP when it knows enough.")
    user: str = setting(_sim("user"), "Simulated user for --clarify simulate: template, llm, or module:attr.")
    summary: str = setting(_sim("summary"), "Summary agent (dialogue -> brief): llm, template, or module:attr.")
    writer: str = setting("llm", "Report writer: llm (inline [docid] citations, checked) or extractive "
                          "(ranked evidence sentences under the brief's points; no LLM, deterministic).")
    k: int = setting(5, "Hits retrieved per sub-query.")
    max_evidence: int = setting(12, "Evidence documents kept per report (round-robin over sub-queries).")
    report_sentences: int = setting(9, "Extractive writer: cited evidence sentences per report, shared "
                                    "round-robin between the overview and the brief's points.")
    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder of the gate and of intent coverage.")
    thresholds: str | None = setting(None, "Gate thresholds JSON written by 'irtk calibrate' (default: "
                                     "the ones shipped for --embedder).")
    tau_rel: float | None = setting(None, "Override the relevance threshold of the gate and of intent "
                                    "coverage (an intent is addressed at this cosine or above).")
    temperature: float = setting(_sim("temperature"), "Clarifier sampling temperature (0: greedy).")
    top_p: float = setting(_sim("top_p"), "Clarifier nucleus sampling mass.")
    max_tokens: int = setting(_sim("max_tokens"), "Tokens per clarifier turn (and per assumptions list).")
    summary_max_tokens: int = setting(_sim("summary_max_tokens"), "Tokens of the brief (--summary llm).")
    writer_max_tokens: int = setting(384, "Tokens of the report (--writer llm).")
    seed: int = setting(0, "Random seed (first of --repeats seeds).")
    repeats: int = setting(1, "Run every request with seeds seed, seed+1, ...: a graph request gets "
                           "another simulated user per seed; the report's intervals resample seeds too.")
    batch_size: int = setting(16, "Requests advancing together (one backend call per turn).")
    limit: int | None = setting(None, "Research at most N requests.")
    bootstrap: int = setting(1000, "Bootstrap resamples (requests and seeds) for 95% intervals.")
    label: str | None = setting(None, "Name of this run in the comparison table (default: from --clarify "
                                "and the clarifier model).")

    def __post_init__(self) -> None:
        require(bool(self.index), "irtk research needs --index FOLDER")
        require(self.clarify in CLARIFY_MODES,
                f"--clarify must be one of {', '.join(CLARIFY_MODES)}, got {self.clarify!r}")
        require(self.writer in WRITERS, f"--writer must be one of {', '.join(WRITERS)}, got {self.writer!r}")
        for name, value, low in (("--max-turns", self.max_turns, 1), ("--k", self.k, 1),
                                 ("--max-evidence", self.max_evidence, 1),
                                 ("--report-sentences", self.report_sentences, 1),
                                 ("--repeats", self.repeats, 1), ("--batch-size", self.batch_size, 1)):
            require(value >= low, f"{name} must be at least {low}, got {value}")
        require(self.limit is None or self.limit >= 0, f"--limit must be >= 0, got {self.limit}")
        self.dialogue()  # the dialogue settings (and the embedder's thresholds) fail before any work

    def dialogue(self) -> SimulateConfig:
        """The settings of the clarification loop, as ``irtk simulate`` takes them: the clarifier is
        the model policy on --clarifier-model; the user, summary agent and gate as configured."""
        return SimulateConfig(
            policy="model", backend=self.backend, model=self.clarifier, base_url=self.base_url,
            dtype=self.dtype, user=self.user, user_model=self.model, summary=self.summary,
            summary_model=self.model, embedder=self.embedder, thresholds=self.thresholds,
            tau_rel=self.tau_rel, max_turns=self.max_turns, allow_stop=self.allow_stop,
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
            summary_max_tokens=self.summary_max_tokens, seed=self.seed, batch_size=self.batch_size)

    @property
    def clarifier(self) -> str:
        return self.clarifier_model or self.model

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.repeats)]

    def sampling(self, max_tokens: int, seed: int, *, greedy: bool = False) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=0.0 if greedy else self.temperature,
                              top_p=self.top_p, seed=seed)

    def run_label(self, clarify: str | None = None) -> str:
        """The comparison table's row name."""
        if self.label:
            return self.label
        mode = clarify or self.clarify
        if mode in ("simulate", "interactive") and self.clarifier_model:
            return f"{mode} ({self.clarifier_model.rstrip('/').split('/')[-1]})"
        return mode

    def recorded(self) -> dict:
        """The config as provenance, with the gate thresholds in force."""
        out = asdict(self)
        out["gate_thresholds"] = self.dialogue().recorded()["gate_thresholds"]
        return out
