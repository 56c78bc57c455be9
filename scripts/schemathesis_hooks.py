"""Loaded by schemathesis through SCHEMATHESIS_HOOKS (the contract test and `make fuzz`).

CPython 3.11.7, this machine's Python, raises `SystemError: AST constructor recursion depth
mismatch` (CPython gh-106905, fixed in 3.11.8) when `ast.parse` runs deep in a call stack. Hypothesis
parses a lambda's source only to *describe* a strategy (its repr); deep inside the nested strategies
of `POST /api/events/batch` that parse hits the bug and the run reports an error that is neither
Pulse's nor schemathesis'. The description falls back to the lambda's name there; nothing that is
generated or checked changes.
"""
import sys

from hypothesis.internal import lambda_sources

if sys.version_info < (3, 11, 8):
    _describe = lambda_sources.lambda_description

    def _lambda_description(f) -> str:
        try:
            return _describe(f)
        except SystemError:
            return "lambda: <source not parsed>"

    lambda_sources.lambda_description = _lambda_description
