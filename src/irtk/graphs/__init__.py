"""Intent refinement graphs (C-DAGs): schema and validation, LLM graph building, depth-first
traversal into trajectories, dialogue rendering and drawing. ``irtk expand`` lives here.

Nothing here runs a dialogue against a user: that is :mod:`irtk.dialogue`, which reads the
trajectories this package writes.
"""
