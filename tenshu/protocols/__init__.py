"""Pure translation between wire formats and core types, in both directions; no I/O.

Server direction (api/ uses it): parse a request into a ChatRequest, encode ChatEvents as the
protocol's response, stream chunks and errors. Client direction (upstream backends use it):
encode a ChatRequest as the protocol's request, parse its responses back into ChatEvents.
"""
