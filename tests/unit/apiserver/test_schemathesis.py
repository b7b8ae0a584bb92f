"""Schemathesis over every operation of the live apiserver (real controller behind it), with
all checks: no server errors, every response documented and matching its schema."""

from __future__ import annotations

import secrets

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.transport.serialization import serialize_binary

from flame_apiserver import ApiserverSettings, create_app

# Schema-valid input the controller still rejects with 400 for reasons a JSON schema cannot
# state: opaque page tokens it did not issue, design schemas and job specs that fail their
# semantic validation (roles/channels that do not fit together, unknown datasets).
LIVE_ADMIN_TOKEN = f"flm_user_{secrets.token_urlsafe(32)}"  # the `live` fixture bootstraps it
SEMANTIC_400 = ["2xx", "400", "401", "403", "404", "409"]
NEGATIVE = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {
        # Through the security scheme, not a fixed header, so the ignored-auth check really
        # sends its requests without (or with a wrong) token.
        "auth": {"openapi": {"HTTPBearer": {"bearer": LIVE_ADMIN_TOKEN}}},
        # A body over the size limit is refused before it is parsed: 413, not 422.
        "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE}},
        "operations": [
            {
                "include-method": method,
                "include-path-regex": path,
                "checks": {"positive_data_acceptance": {"expected-statuses": SEMANTIC_400}},
            }
            for method, path in [
                ("GET", r"^/v1/(users|projects|nodes|datasets|designs|jobs)$"),
                ("POST", r"^/v1/(designs|jobs)$"),
                ("PATCH", r"^/v1/(designs|jobs)/\{id\}$"),
                # "best", "latest" and v<n> fit the alias pattern but are the platform's own
                ("PUT", r"^/v1/models/\{name\}/aliases/\{alias\}$"),
            ]
        ],
    }
)


@schemathesis.serializer("application/zip")
def _zip_body(_ctx, value) -> bytes:  # code uploads: raw bytes (the controller checks the zip)
    return serialize_binary(value)


# The document the server publishes at /openapi.json (it needs no controller to be built).
schema = schemathesis.openapi.from_dict(create_app(ApiserverSettings()).openapi(), config=CONFIG)


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case, live) -> None:
    assert live.admin_token == LIVE_ADMIN_TOKEN
    # a generous read timeout: under a CPU hog beside the suite, 10 s (the default) ran out
    case.call_and_validate(base_url=live.url, timeout=120)
