"""A small evaluator of IAM policy statements (our bucket policy's Denies, the job roles' Allows).

It implements the IAM rules our policy relies on: Action/Resource/NotResource matching with `*`
wildcards, and the condition operators Bool, Null, StringEquals, StringNotEquals and StringLike with
IAM's handling of a key absent from the request (a negated operator matches, the others do not).
An operator it does not know raises, so a policy it cannot judge fails the test instead of passing.
"""

from __future__ import annotations

from fnmatch import fnmatchcase


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _matches_any(patterns, value) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in _as_list(patterns))


def _condition_holds(operator: str, key: str, expected, context: dict) -> bool:
    present = key in context
    actual = context.get(key)
    values = [str(v) for v in _as_list(expected)]
    if operator == "Null":
        return (not present) == (values[0].lower() == "true")
    if operator == "Bool":
        return present and str(actual).lower() in [v.lower() for v in values]
    if operator == "StringEquals":
        return present and str(actual) in values
    if operator == "StringNotEquals":
        return not present or str(actual) not in values
    if operator == "StringLike":
        return present and _matches_any(values, str(actual))
    raise NotImplementedError(f"condition operator {operator} is not evaluated by this test helper")


def statement_applies(statement: dict, action: str, resource: str, context: dict) -> bool:
    if "Action" in statement and not _matches_any(statement["Action"], action):
        return False
    if "Resource" in statement and not _matches_any(statement["Resource"], resource):
        return False
    if "NotResource" in statement and _matches_any(statement["NotResource"], resource):
        return False
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, entries in statement.get("Condition", {}).items()
        for key, expected in entries.items()
    )


def is_denied(policy: dict, action: str, resource: str, context: dict) -> bool:
    """True when an explicit Deny of the policy matches the request."""
    return any(
        statement["Effect"] == "Deny" and statement_applies(statement, action, resource, context)
        for statement in policy["Statement"]
    )


def is_allowed(policy: dict, action: str, resource: str, context: dict) -> bool:
    """True when an Allow statement of the policy matches the request and no Deny does."""
    return not is_denied(policy, action, resource, context) and any(
        statement["Effect"] == "Allow" and statement_applies(statement, action, resource, context)
        for statement in policy["Statement"]
    )
