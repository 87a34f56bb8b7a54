"""Entropy dynamics in RL fine-tuning (arXiv 2602.03392): per-token entropy, the entropy
discriminator and the predicted entropy change of a policy-gradient step, and entropy control.

- ``math``: the streaming per-token statistics (H, log p_k, S_k, E_p[S], D_k) from logits or from
  hidden states and the LM head, one vocabulary tile at a time.
- ``control``: Clip_B, Clip_V, Clip-Cov, KL-Cov, top-entropy and the entropy bonus as per-token
  masks, weights or loss terms for a trainer's per-token loss.
- ``config``: ``EntropyControlConfig`` and ``AuditConfig`` (light: no torch at import).
- ``audit``: ``irtk entropy-audit`` as a library call.
- ``plots``: the audit's figures and training curves from ``metrics.parquet`` files.
"""
