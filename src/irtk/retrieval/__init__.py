"""Dense retrieval: encoders (text, CLIP, CIEA), faiss indexes, search, TREC runs and metrics.

Every piece is usable from Python without the CLI; ``irtk index``, ``irtk retrieve`` and
``irtk train-retriever`` are thin skins that fill a typed config (``config``) and call
``index.index_documents``, ``search.retrieve`` and ``train.train``. Encoders live in
``encoders/`` (one module per kind, chosen through ``encoders.ENCODERS``); ``staging`` writes
folders whole or not at all; ``testbed`` is the two-digit CIEA testbed.
"""
