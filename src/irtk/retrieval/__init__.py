"""Dense retrieval: encoders (text, CLIP, CIEA), faiss indexes, search, TREC runs and metrics.

Every piece is usable from Python without the CLI; ``irtk index``, ``irtk retrieve`` and
``irtk train-retriever`` are thin skins over ``index.build_index``, ``search.retrieve`` and
``train.train``.
"""
