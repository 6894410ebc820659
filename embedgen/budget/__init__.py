"""Prices, spend and caps: what embedding costs, and the guarantee that caps hold.

- :mod:`~embedgen.budget.prices`: the dated built-in price table (USD per 1M tokens).
- :mod:`~embedgen.budget.ledger`: spend per provider per month and per run, on disk.
- :mod:`~embedgen.budget.caps`: :class:`~embedgen.budget.caps.Budget`, reserving before
  each request and reconciling after, under run, monthly and per-provider caps.
- :mod:`~embedgen.budget.report`: what is left under the caps (for ``cost-estimate``).

The budget is a spend account the router consults (:class:`embedgen.router.Spend`), not a
provider wrapper; this package imports nothing from providers, router or pipeline.
"""
