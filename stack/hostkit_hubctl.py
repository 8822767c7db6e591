"""User administration inside the hub container, for `hostkit users`.

Run as `python3 /srv/hostkit/hostkit_hubctl.py COMMAND [NAME]`; prints one JSON object.
- list: every account NativeAuthenticator knows, with approval, admin and server state.
- create NAME: an approved account; the password is read from standard input.
- approve NAME: approval through the live hub (POST /hub/hostkit/approve/NAME, added by
  jupyterhub_config.py, with the `hostkit` service's token), so the hub's own database
  session makes the change and the user can log in at once.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

import bcrypt
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

DB_URL = os.environ.get("HOSTKIT_DB_URL", "sqlite:////data/jupyterhub.sqlite")
HUB_URL = os.environ.get("HOSTKIT_HUB_URL", "http://127.0.0.1:8081")


def fail(message: str, code: int = 1) -> None:
    print(json.dumps({"ok": False, "error": message}))
    sys.exit(code)


def session() -> Session:
    return Session(create_engine(DB_URL))


def normalize(name: str) -> str:
    return name.strip().lower()


def list_users() -> dict[str, Any]:
    with session() as db:
        hub_users = {u.name: u for u in db.query(orm.User).all()}
        out = []
        for info in db.query(UserInfo).order_by(UserInfo.username).all():
            user = hub_users.get(info.username)
            running = bool(user and any(s.server is not None for s in user._orm_spawners))
            out.append(
                {
                    "name": info.username,
                    "approved": bool(info.is_authorized),
                    "admin": bool(user and user.admin),
                    "server_running": running,
                    "last_activity": user.last_activity.isoformat() + "Z"
                    if user and user.last_activity
                    else None,
                }
            )
    return {"ok": True, "users": out}


def create_user(name: str, password: str) -> dict[str, Any]:
    minimum = int(os.environ.get("HOSTKIT_MIN_PASSWORD_LENGTH", "10") or 10)
    if len(password) < minimum:
        fail(f"the password must have at least {minimum} characters", 2)
    with session() as db:
        if db.query(UserInfo).filter(UserInfo.username == name).first() is not None:
            fail(f"user {name} already exists", 3)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        db.add(UserInfo(username=name, password=hashed, is_authorized=True))
        db.commit()
    return {"ok": True, "created": name}


def approve_user(name: str) -> dict[str, Any]:
    token = os.environ.get("HOSTKIT_API_TOKEN", "")
    if not token and os.path.exists("/run/hostkit-secrets/api_token"):  # where the stack mounts it
        with open("/run/hostkit-secrets/api_token", encoding="utf-8") as fh:
            token = fh.read().strip()
    if not token:
        fail("HOSTKIT_API_TOKEN is not set in the hub's environment")
    request = urllib.request.Request(  # noqa: S310 - HUB_URL is the hub's own http address
        f"{HUB_URL}/hub/hostkit/approve/{name}",
        data=b"",
        method="POST",
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - same
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            fail(f"no sign-up for {name}", 3)
        fail(f"the hub refused the approval: HTTP {exc.code}")
    return {"ok": True, "approved": name, "changed": bool(answer["changed"])}


def main(argv: list[str]) -> None:
    if not argv:
        fail("usage: hostkit_hubctl.py list | create NAME | approve NAME", 2)
    command, rest = argv[0], argv[1:]
    if command == "list":
        result = list_users()
    elif command in ("create", "approve") and len(rest) == 1:
        name = normalize(rest[0])
        if command == "create":
            result = create_user(name, sys.stdin.read().rstrip("\n"))
        else:
            result = approve_user(name)
    else:
        fail(f"unknown command {' '.join(argv)!r}", 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
