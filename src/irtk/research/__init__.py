"""The research agent: clarify the user's intent, retrieve evidence from an irtk index, write a
report with checked ``[docid]`` citations, and evaluate it against the user's latent intents.

``irtk research`` is a thin skin over ``agent.run_research``; ``evaluate.comparison_table`` makes
the table of clarification modes (``irtk research-table``).
"""
