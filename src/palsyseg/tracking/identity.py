"""Who is acting on the registry: authenticated users on a server, declared names locally.

Two modes, chosen by the tracking store, never by a flag:

``basic-auth``
    The tracking URI is an MLflow server started with ``--app-name basic-auth``. The identity
    is the user the server authenticated for this client (``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``), read back from the server (``/api/2.0/mlflow/users/current``):
    a typed ``--reviewer`` can only repeat it. Permissions on the registered model come from
    the server as well (:func:`model_permission`).
``declared``
    A local sqlite store or a server without authentication. The identity is the name the
    person typed (``--reviewer``, ``$PALSYSEG_USER``); nothing verifies it. It is normalised
    (:func:`normalise_name`) so that ``Alice``, ``alice `` and ``ali\\u200bce`` are one person.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass

from palsyseg.errors import PalsysegError

BASIC_AUTH = "basic-auth"
DECLARED = "declared"
CURRENT_USER_ENDPOINT = "/api/2.0/mlflow/users/current"
PERMISSION_ENDPOINT = "/api/3.0/mlflow/users/permissions/get"
# Unicode categories that render as nothing (or nothing visible) and so cannot tell two
# names apart: format characters (zero-width space/joiners, bidi marks, soft hyphen, BOM),
# controls, private-use, surrogates and unassigned code points.
_INVISIBLE = frozenset({"Cf", "Cc", "Co", "Cs", "Cn"})


class IdentityError(PalsysegError):
    """Who is acting cannot be established, or may not do what was asked."""


@dataclass(frozen=True)
class Identity:
    """A person acting on the registry, and how palsyseg knows who they are."""

    name: str  # normalised: what is recorded and compared
    mode: str  # BASIC_AUTH or DECLARED
    login: str = ""  # the server's username as it spells it (permission look-ups)
    is_admin: bool = False

    @property
    def verified(self) -> bool:
        return self.mode == BASIC_AUTH


def visible_text(text: str) -> str:
    """``text`` without invisible characters, whitespace collapsed (case and letters kept):
    what a reason must still say once nothing hides in it."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE)
    return " ".join(kept.split())


def normalise_name(name: str) -> str:
    """The comparable form of a person's name: Unicode NFKC, invisible characters removed,
    whitespace collapsed, case folded (Unicode's NFKC_Casefold, roughly, plus the removal).

    Letters that merely look alike across scripts (Cyrillic ``а`` and Latin ``a``) stay
    different: local names are declared, not verified.
    """
    text = visible_text(unicodedata.normalize("NFKC", name)).casefold()
    return unicodedata.normalize("NFKC", text)


def same_person(a: str, b: str) -> bool:
    return bool(a) and normalise_name(a) == normalise_name(b)


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def authenticated_user(tracking_uri: str) -> tuple[str, bool] | None:
    """``(username, is_admin)`` the server authenticated this client as; ``None`` when the
    store has no authentication (sqlite, or a server without basic-auth).

    Raises :class:`IdentityError` when the server demands credentials this client lacks.
    """
    if not _is_server(tracking_uri):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    response = http_request(creds, CURRENT_USER_ENDPOINT, "GET", timeout=30)
    if response.status_code == 401:
        raise IdentityError(
            f"{tracking_uri}: the tracking server requires authentication; set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code != 200:
        return None  # no auth app: the endpoint does not exist
    try:
        user = json.loads(response.text)["user"]
        return str(user["username"]), bool(user.get("is_admin", False))
    except (ValueError, KeyError, TypeError):
        return None  # a page that is not the auth app's answer


def resolve(declared: str | None, tracking_uri: str, *, flag: str = "--reviewer") -> Identity:
    """The person acting: the authenticated user on a server with authentication (a
    ``declared`` name must then be the same person), else the normalised declared name."""
    found = authenticated_user(tracking_uri)
    if found is not None:
        username, is_admin = found
        if declared and declared.strip() and not same_person(declared, username):
            raise IdentityError(
                f"{flag} {declared.strip()}: you are authenticated as {username} on "
                f"{tracking_uri}; the registry records the authenticated user (leave {flag} "
                "out, or log in as that person)"
            )
        return Identity(normalise_name(username), BASIC_AUTH, username, is_admin)
    name = normalise_name(declared or "")
    if not name:
        raise IdentityError(f"{flag}: a name is required (this store does not authenticate)")
    return Identity(name, DECLARED)


def model_permission(tracking_uri: str, username: str, model: str) -> str:
    """The permission (``READ``, ``EDIT``, ``MANAGE``, ...) the server resolves for ``username``
    on registered model ``model`` (a user may ask about themself).

    Asked over REST rather than through ``mlflow.server.auth.client``, which would import the
    whole MLflow server (Flask, FastAPI) into a client process.
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        get_default_host_creds(tracking_uri),
        PERMISSION_ENDPOINT,
        "GET",
        params={"username": username, "resource_type": "registered_model", "resource_id": model},
        timeout=30,
    )
    try:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
        return str(json.loads(response.text)["permission"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(
            f"{tracking_uri}: cannot read {username}'s permission on registered model "
            f"{model} ({exc})"
        ) from None


def require_manage(identity: Identity, tracking_uri: str, model: str, action: str) -> str | None:
    """``None`` when ``identity`` may change ``champion`` of ``model``, else the reason why not.

    On a server with authentication, changing champion needs MANAGE on the registered model
    (MLflow itself lets EDIT move an alias; palsyseg asks more of a reviewer). Declared
    identities have no permissions to check.
    """
    if not identity.verified or identity.is_admin:
        return None
    permission = model_permission(tracking_uri, identity.login or identity.name, model)
    if permission == "MANAGE":
        return None
    return (
        f"{identity.name} has {permission} on registered model {model}; to {action} needs "
        "MANAGE (an MLflow admin grants it)"
    )
