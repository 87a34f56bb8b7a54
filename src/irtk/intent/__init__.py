"""IntentRL: intent refinement graphs (C-DAG), trajectories, user simulation and rewards."""
