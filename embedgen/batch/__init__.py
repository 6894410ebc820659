"""Batch mode: cache misses through the providers' asynchronous batch APIs, at the batch price.

- :mod:`~embedgen.batch.client`: the Files and Batches endpoints (OpenAI, Azure OpenAI).
- :mod:`~embedgen.batch.pack`: misses into requests and files, within the documented limits.
- :mod:`~embedgen.batch.journal`: every job on disk before it is submitted.
- :mod:`~embedgen.batch.collect`: result lines into the vector cache, failures named.
- :mod:`~embedgen.batch.runner`: submit, wait, collect, resubmit what failed.
- :mod:`~embedgen.batch.prepass`: the run's entry (``mode = "batch"``).

It sits above providers, router, budget and cache and below pipeline, which calls
:func:`~embedgen.batch.prepass.batch_prepass` with its own scan of the corpus.
"""
