"""The metric-agnostic core: loading, layers, capture, engine, registry, results.

Nothing here imports a concrete metric (a test guards this); metrics are found through the registry.
"""
