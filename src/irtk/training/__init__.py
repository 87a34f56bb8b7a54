"""IntentRL's two training stages on TRL: turn samples, configs, the GRPO trainer with a per-token
loss hook (entropy control), checkpoints with provenance and metrics, held-out evaluation and
rollouts through ``simulate``'s loop, and training-curve plots."""
