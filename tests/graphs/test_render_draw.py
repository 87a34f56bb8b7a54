"""Dialogue rendering (template and batched LLM role-play) and graph pictures."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from irtk.generation import Generation, SamplingParams
from irtk.graphs.draw import draw, file_stem, to_dot, to_mermaid
from irtk.graphs.render import RenderCounts, llm_dialogues, template_dialogue
from irtk.graphs.traversal import Traversal, steps_of
from tests.graphs.cdags import HEAT, SHARED, graph, node, opt


def heat_steps(rank: int) -> list[dict]:
    return steps_of(HEAT, Traversal(HEAT).path(rank))


def test_template_dialogue_is_deterministic_and_alternates():
    steps = heat_steps(0)
    d = template_dialogue(steps)
    assert d == template_dialogue(heat_steps(0))
    assert [m["role"] for m in d] == ["assistant", "user"] * 3
    assert d[0]["content"] == "Which kind of heat pump? Options: Air-source; Ground-source."
    assert d[1]["content"] == "Air-source."
    # An explicit "I want ..." intent is voiced by the user.
    assert d[5]["content"] == "Homeowner. I want the report written for a homeowner"


class Echo:
    """Replies with a fixed text per call (empty on request) and records batch sizes."""

    name, model = "echo", "echo"

    def __init__(self, empty_every: int = 0) -> None:
        self.batches: list[int] = []
        self.empty_every = empty_every
        self.n = 0

    def chat(self, conversations, params):
        self.batches.append(len(conversations))
        out = []
        for conv in conversations:
            self.n += 1
            blank = self.empty_every and self.n % self.empty_every == 0
            text = "" if blank else f"reply to: {conv[-1]['content'].splitlines()[-1]}"
            out.append(Generation(text=text, prompt_tokens=3, completion_tokens=2))
        return out


def items(ranks):
    t = Traversal(SHARED)
    out = []
    for r in ranks:
        steps = steps_of(SHARED, t.path(r))
        out.append(("root", steps, [s["intent"] for s in steps]))
    return out


def test_llm_rendering_is_batched_per_turn_across_live_trajectories():
    backend = Echo()
    batch = items([0, 4, 6])  # 3, 3 and 2 turns
    counts = RenderCounts()
    dialogues = llm_dialogues(backend, batch, SamplingParams(), counts)
    # turn 1: 3 agents then 3 users; turn 2: same; turn 3: only two trajectories are still live.
    assert backend.batches == [3, 3, 3, 3, 2, 2]
    assert [len(d) for d in dialogues] == [6, 6, 4]
    assert all(m["role"] == ("assistant", "user")[i % 2] for d in dialogues for i, m in enumerate(d))
    assert counts.calls == 6 and counts.messages == 16 and counts.fallbacks == 0
    assert counts.prompt_tokens == 48 and counts.completion_tokens == 32


def test_unbatched_rendering_sends_one_trajectory_per_call():
    backend = Echo()
    llm_dialogues(backend, items([0, 4, 6]), SamplingParams(), batched=False)
    assert backend.batches == [1] * 16


def test_the_user_sees_the_question_the_agent_asked_and_the_choice():
    class Spy(Echo):
        def chat(self, conversations, params):
            self.last = conversations
            return super().chat(conversations, params)

    backend = Spy()
    llm_dialogues(backend, items([6]), SamplingParams())
    user_prompt = backend.last[0][-1]["content"]
    assert "Conversation so far:" in user_prompt
    assert "(Your answer: b1. What you want: I want: b1 (asked: B?))" in user_prompt
    assert "a1" not in backend.last[0][0]["content"]  # only this turn's intent is given


def test_empty_replies_fall_back_to_the_template():
    counts = RenderCounts()
    [d] = llm_dialogues(Echo(empty_every=2), items([6]), SamplingParams(), counts)
    template = template_dialogue(items([6])[0][1])
    assert counts.fallbacks == 2
    assert d[1] == template[1] and d[3] == template[3]
    assert d[0]["content"].startswith("reply to:")


def test_mermaid_and_dot_show_every_question_option_and_edge():
    m = to_mermaid(SHARED)
    assert m.startswith("flowchart TD\n")
    assert 'n_c["c: C?"]' in m
    assert "root --> n_a" in m and "root --> n_b" in m
    assert "n_a_o0 --> n_c" in m and "n_b_o0 --> n_c" in m  # the shared child has two parents
    assert 'n_a_o1("a1")' in m  # an option that unlocks nothing still shows
    d = to_dot(SHARED, "shared")
    assert d.startswith('digraph "shared" {')
    assert '"a#o0" -> "c";' in d and '"b#o0" -> "c";' in d


def test_labels_are_escaped():
    g = graph('Say "hi" <now>', ["q"], node("q", 'Quote "this"?', opt('a "b"'), opt("c\\d")))
    m = to_mermaid(g)
    assert 'root(["Say #quot;hi#quot; #lt;now#gt;"])' in m
    assert 'n_q_o0("a #quot;b#quot;")' in m
    d = to_dot(g)
    assert 'label="q: Quote \\"this\\"?"' in d and "c\\\\d" in d


def test_file_stem_is_safe():
    assert file_stem("a/b c:d") == "a_b_c_d"
    assert file_stem("../..") == "graph"


def test_draw_writes_text_formats(tmp_path):
    written = draw(HEAT, tmp_path, "seed/1", images=())
    assert [p.name for p in written] == ["seed_1.mmd", "seed_1.dot"]
    assert (tmp_path / "seed_1.mmd").read_text().startswith("flowchart TD")


def test_draw_renders_images_with_graphviz(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed (apt-get install graphviz); text formats only")
    written = draw(HEAT, tmp_path, "heat")
    names = sorted(p.name for p in written)
    assert names == ["heat.dot", "heat.mmd", "heat.png", "heat.svg"]
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "heat.svg").read_bytes()
    # dot itself accepts the DOT text (a syntax error would fail here).
    done = subprocess.run(["dot", "-Tplain"], input=to_dot(SHARED), capture_output=True, text=True)
    assert done.returncode == 0 and "node c" in done.stdout.replace('"', "")


def test_draw_makes_a_png_without_graphviz(tmp_path, monkeypatch):
    from irtk.graphs import draw as draw_mod

    monkeypatch.setattr(draw_mod, "dot_available", lambda: False)
    written = draw(SHARED, tmp_path, "shared")
    assert [p.name for p in written] == ["shared.mmd", "shared.dot", "shared.png"]
    png = (tmp_path / "shared.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_the_python_drawing_has_every_node_and_arrows_point_down():
    from irtk.graphs.draw import to_networkx

    g = to_networkx(SHARED)
    questions = {n for n, d in g.nodes(data=True) if d["kind"] == "question"}
    options = [n for n, d in g.nodes(data=True) if d["kind"] == "option"]
    assert questions == {f"q:{nid}" for nid in SHARED["nodes"]}
    assert len(options) == sum(len(node["options"]) for node in SHARED["nodes"].values())
    assert all(g.nodes[b]["layer"] > g.nodes[a]["layer"] for a, b in g.edges)
