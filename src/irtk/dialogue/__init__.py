"""Clarification dialogues: clarifier policies, the simulated user and its embedding gate, the
summary agent, per-turn rewards, metrics, and the batched rollout loop (``irtk simulate``).

The trainers and ``irtk research`` import from here; nothing here builds graphs. The one thing
taken from :mod:`irtk.graphs` is the template phrasing of a graph node (``graphs.render``), so a
template user and the oracle policy speak as rendered trajectories do.
"""
