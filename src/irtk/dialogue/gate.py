"""The simulated user's embedding gate, shared by the user simulator and the rewards.

A question is *redundant* when its cosine similarity to the dialogue history exceeds
``tau_rep``, and *irrelevant* when its best similarity to the user's latent intents is below
``tau_rel`` (IntentRL, "User simulator"). The history is the user's request and the earlier
questions — the paper's H = (q_s, x_1, u_1, ...) without the user's answers, whose wording is the
simulator's own — so merely restating the request is a repetition too. Otherwise it is *answered*, about the intent it
is most similar to (ties go to the earlier intent, so verdicts are stable).

The paper's 0.92 / 0.8 were set for all-mpnet-base-v2. all-MiniLM-L6-v2 (the embedded default)
spreads cosines lower: on the labelled pairs of ``bench/calibrate_gate.py``, a question (with its
options) and the "I want ..." intent it asks about score 0.48-0.69, unrelated pairs -0.00-0.44;
a reworded repeat of a question scores 0.61-0.93, a different question about the same request
0.03-0.70. The defaults below are that script's picks (balanced accuracy 1.00 and 0.975); the
paper's values would call every question irrelevant and miss most repeats on this embedder.
Re-run the script with ``--embedder NAME`` before using another embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from irtk.models import DEFAULT_EMBEDDER

# Calibrated for minilm-l6 by bench/calibrate_gate.py.
DEFAULT_TAU_REP = 0.59
DEFAULT_TAU_REL = 0.46
DEFAULT_TAU_REQ = 0.80

ANSWERED, REDUNDANT, RESTATES, IRRELEVANT, STOP = "answered", "redundant", "restates", "irrelevant", "stop"


@dataclass(frozen=True)
class Verdict:
    """What the gate made of one question."""

    verdict: str  # answered | redundant | restates | irrelevant
    matched_intent: str | None  # the most similar intent when answered
    similarity: float  # best cosine to the intents (0.0 when there are none)
    history_similarity: float  # best cosine to an earlier question (0.0 when there is none)
    request_similarity: float = 0.0  # cosine to the user's request (0.0 without one)

    @property
    def repeats(self) -> bool:
        return self.verdict == REDUNDANT


class EmbeddingGate:
    """Cosine tests of questions against history and intents, with one embedding cache.

    ``embedder`` is a registry name, a path, a hub id, or an object with sentence-transformers'
    ``encode``. The model loads on first use, so building a gate is free.
    """

    def __init__(self, embedder: str | Any = DEFAULT_EMBEDDER, *, tau_rep: float = DEFAULT_TAU_REP,
                 tau_rel: float = DEFAULT_TAU_REL, tau_req: float = DEFAULT_TAU_REQ) -> None:
        self.embedder = embedder
        self.tau_rep = tau_rep
        self.tau_rel = tau_rel
        self.tau_req = tau_req
        self._model: Any = None if isinstance(embedder, str) else embedder
        self._cache: dict[str, np.ndarray] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from irtk.embedding import load_embedder

            self._model = load_embedder(self.embedder)
        return self._model

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed every text not seen yet in one batched call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if not missing:
            return
        from irtk.embedding import embed

        for text, vector in zip(missing, embed(missing, self.model), strict=True):
            self._cache[text] = vector
        if len(self._cache) > 200_000:  # a long-running trainer must not grow without bound
            self._cache = dict(list(self._cache.items())[-100_000:])

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        self.prefetch(texts)
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def best(self, text: str, others: Sequence[str]) -> tuple[float, int]:
        """Highest cosine of ``text`` to ``others`` and its index (first on ties); (0.0, -1) if none."""
        if not others:
            return 0.0, -1
        sims = self.vectors(list(others)) @ self.vectors([text])[0]
        index = int(np.argmax(sims))  # argmax returns the first maximum: a stable tie-break
        return float(sims[index]), index

    def judge(self, question: str, history: Sequence[str], intents: Sequence[str],
              request: str | None = None) -> Verdict:
        """The verdict for ``question`` given the earlier questions, the latent intents and the
        user's request: redundant, then restates, then irrelevant, else answered."""
        rep, _ = self.best(question, history)
        req, _ = self.best(question, [request] if request else [])
        rel, index = self.best(question, intents)
        if history and rep > self.tau_rep:
            verdict = REDUNDANT
        elif request and req > self.tau_req:
            verdict = RESTATES
        elif not intents or rel < self.tau_rel:
            verdict = IRRELEVANT
        else:
            verdict = ANSWERED
        matched = intents[index] if verdict == ANSWERED else None
        return Verdict(verdict, matched, rel, rep, req)

    def judge_many(self, items: Sequence[tuple[str, Sequence[str], Sequence[str], str | None]]) -> list[Verdict]:
        """``judge`` for many (question, history, intents, request) at once, embedding in one call."""
        self.prefetch([t for q, h, i, r in items for t in (q, *h, *i, *([r] if r else []))])
        return [self.judge(q, h, i, r) for q, h, i, r in items]
