"""Prices, spend and caps: what embedding costs, and the guarantee that caps hold.

- :mod:`~embedgen.budget.prices`: the dated built-in price table (USD per 1M tokens).
- :mod:`~embedgen.budget.ledger`: spend per provider per month and per run, on disk.
- :mod:`~embedgen.budget.caps`: :class:`~embedgen.budget.caps.Budget`, reserving before
  each request and reconciling after, under run, monthly and per-provider caps.
- :mod:`~embedgen.budget.attach`: the budget around a provider or fallback chain.
- :mod:`~embedgen.budget.session`: the budget of one ``run``.
- :mod:`~embedgen.budget.estimate`, :mod:`~embedgen.budget.report`: ``cost-estimate``.
"""
