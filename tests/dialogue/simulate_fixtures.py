"""Hand-made trajectories, a bag-of-words embedder and a scripted backend for simulate tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

import numpy as np

from irtk.generation import Generation

EUROPE = "I want the report to cover Europe."
ASIA = "I want the report to cover Asia."
GERMANY = "I want the European part to focus on Germany."
JAPAN = "I want the Asian part to focus on Japan."
EXECUTIVES = "I want the report written for executives."
ENGINEERS = "I want the report written for engineers."


def _opt(text: str, intent: str, *nxt: str) -> dict:
    return {"text": text, "next_node_id": list(nxt), "intent": intent}


GRAPH = {
    "root_node": "Tell me about the battery market",
    "start_node_ids": ["q1", "q2"],
    "nodes": {
        "q1": {"id": "q1", "text": "Which region should the report cover?",
               "options": [_opt("Europe", EUROPE, "q5"), _opt("Asia", ASIA, "q3")]},
        "q2": {"id": "q2", "text": "Who is the audience of the report?",
               "options": [_opt("Executives", EXECUTIVES), _opt("Engineers", ENGINEERS)]},
        "q3": {"id": "q3", "text": "Which Asian country should the Asian part focus on?",
               "options": [_opt("Japan", JAPAN), _opt("China", "I want the Asian part to focus on China.")]},
        "q5": {"id": "q5", "text": "Which European country should the European part focus on?",
               "options": [_opt("Germany", GERMANY), _opt("France", "I want the European part to focus on France.")]},
    },
}


def _step(turn: int, node_id: str, choice_index: int, stack: list[str], chosen: dict) -> dict:
    node = GRAPH["nodes"][node_id]
    return {
        "turn": turn, "node_id": node_id, "question": node["text"],
        "options": [o["text"] for o in node["options"]],
        "choice": node["options"][choice_index]["text"], "choice_index": choice_index,
        "intent": node["options"][choice_index]["intent"],
        "target_node_ids": stack, "target_intents": [chosen[n] for n in stack],
    }


def trajectory(tid: str, choices: dict[str, int], order: list[str], stacks: list[list[str]]) -> dict:
    chosen = {n: GRAPH["nodes"][n]["options"][i]["intent"] for n, i in choices.items()}
    path = [_step(t, n, choices[n], stacks[t - 1], chosen) for t, n in enumerate(order, 1)]
    return {
        "id": tid, "seed_id": "battery", "query": "A detailed battery market report",
        "simple_query": "Tell me about the battery market", "graph": copy.deepcopy(GRAPH),
        "path": path, "intents": [s["intent"] for s in path], "render": "template",
        "dialogue": [], "extra_column": {"kept": tid},  # an unknown column that must pass through
    }


# Depth-first with the start nodes q1 (top) and q2: the chosen region's follow-up goes on top.
EUROPE_USER = trajectory("battery/0", {"q1": 0, "q5": 0, "q2": 0}, ["q1", "q5", "q2"],
                         [["q1", "q2"], ["q5", "q2"], ["q2"]])
ASIA_USER = trajectory("battery/1", {"q1": 1, "q3": 0, "q2": 1}, ["q1", "q3", "q2"],
                       [["q1", "q2"], ["q3", "q2"], ["q2"]])
TRAJECTORIES = [EUROPE_USER, ASIA_USER]


def jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


class BagOfWordsEmbedder:
    """A deterministic stand-in for a sentence embedder: hashed content-word counts, L2-normalised.

    Cosine is word overlap, which is enough to test the loop's plumbing without a model.
    """

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(n_features=1024, alternate_sign=False, norm="l2",
                                            stop_words="english")

    def get_sentence_embedding_dimension(self) -> int:
        return 1024

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        return self.vectorizer.transform(list(texts)).toarray().astype(np.float32)


class KeyedEmbedder:
    """Exact, hand-chosen unit vectors per text, for reward and gate arithmetic."""

    def __init__(self, vectors: dict[str, Sequence[float]]) -> None:
        self.vectors = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in vectors.items()}

    def get_sentence_embedding_dimension(self) -> int:
        return len(next(iter(self.vectors.values())))

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


class ScriptedBackend:
    """A generation backend that replies from a script and records every ``chat`` call.

    ``model`` picks the script: ``repeat`` asks the same question every turn; ``stop`` asks one
    question, then answers STOP; ``echo-summary`` writes a fixed summary.
    """

    name = "scripted"
    calls: list[int] = []  # batch size of every chat call, across instances

    def __init__(self, model: str, **_: object) -> None:
        self.model = model

    def chat(self, conversations, params):
        ScriptedBackend.calls.append(len(conversations))
        out = []
        for conv in conversations:
            asked = sum(m["role"] == "assistant" for m in conv)
            if conv[0]["content"].startswith("You turn a clarification dialogue"):
                text = "SUMMARY: battery market report"
            elif self.model == "stop" and asked >= 1:
                text = "STOP"
            else:
                text = "Question: Which region should the report cover? Options: A) Europe; B) Asia"
            out.append(Generation(text=text, prompt_tokens=10 + asked, completion_tokens=5))
        return out
