"""The router: which model answers a request, and what to try when it fails.

    router.py       Router.plan(request, ctx) -> Plan: the route, the tier, the candidates
    policy.py       routes, tiers and rules from tenshu.toml, applied to a request
    sentinel.py     the simple/complex score (embedder or small local model)
    sovereignty.py  what may not leave the machine (private header, key, content matchers)
    health.py       cooldowns, concurrency limits, least-busy replicas
    budget.py       daily token and cost budgets per key and tier
    trace.py        the record of where a request went and why
"""
