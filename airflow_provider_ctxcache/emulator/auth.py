"""Authentication as each backend checks it, and a local OAuth2 token endpoint.

Developer API: an API key in ``x-goog-api-key`` or ``?key=``; none -> 403, a wrong one (when
the emulator was given ``--api-key``) -> 400 API_KEY_INVALID. Vertex: any bearer token; none
-> 401. Keys are compared in constant time and never echoed or logged.

``POST /oauth2/token`` answers the JWT-bearer grant google-auth's service-account credentials
send to their ``token_uri``, so a real service-account JSON can point at the emulator. The
assertion must be a well-formed three-part JWT; its signature is not verified.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError
from .state import EmulatorState

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_S = 3600

_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_NO_TOKEN = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def check_developer(request: Request, api_key: str | None) -> None:
    """The Developer API's key check."""
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not key:
        raise ApiError(403, _NO_KEY)
    if api_key is not None and not hmac.compare_digest(key.encode(), api_key.encode()):
        raise ApiError(
            400,
            "API key not valid. Please pass a valid API key.",
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ],
        )


def check_vertex(request: Request) -> None:
    """Vertex AI's bearer-token check (any non-empty token is accepted)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            _NO_TOKEN,
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "CREDENTIALS_MISSING",
                    "domain": "googleapis.com",
                    "metadata": {"service": "aiplatform.googleapis.com"},
                }
            ],
        )


def _oauth_error(description: str, error: str = "invalid_grant") -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


def _is_jwt(assertion: str) -> bool:
    """Three base64url segments whose first two are JSON objects (signature not checked)."""
    segments = assertion.split(".")
    if len(segments) != 3 or not all(segments):
        return False
    try:
        for segment in segments[:2]:
            decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
            if not isinstance(decoded, dict):
                return False
        base64.urlsafe_b64decode(segments[2] + "=" * (-len(segments[2]) % 4))
    except (binascii.Error, ValueError):
        return False
    return True


async def token_endpoint(request: Request, state: EmulatorState) -> Response:
    """Answer a JWT-bearer grant with a fresh emulator access token."""
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    grant = form.get("grant_type", [""])[0]
    assertion = form.get("assertion", [""])[0]
    if grant != JWT_BEARER:
        return _oauth_error(f"Unsupported grant type; expected {JWT_BEARER}.", "unsupported_grant_type")
    if not _is_jwt(assertion):
        return _oauth_error("Invalid JWT: the assertion is not a three-part JWT.")
    state.tokens_issued += 1
    return JSONResponse(
        {
            "access_token": f"emulator-{secrets.token_urlsafe(24)}",
            "expires_in": TOKEN_LIFETIME_S,
            "token_type": "Bearer",
        }
    )
